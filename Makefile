# vmha — two entry points: `make demo` (the main job; `make demo KEEP=1` leaves
# the lab running and prints the dashboard URL; `make demo CLOUD=openstack` tells the
# same story on a real Nova) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo venv lint typecheck layers unit clean

$(STAMP): pyproject.toml
	scripts/ensure-vm-deps.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy src/vmha/domain src/vmha/ports.py $(wildcard src/vmha/engine)

layers: $(STAMP)
	$(BIN)/lint-imports

# pytest exits 5 when a tier collects no test; that is not a failure here.
# Tests marked own_process open libvirt's embedded driver and event loop in
# the test process itself (libvirt allows one of each per process): they run
# in a second pytest process.
PYTEST_TIER = rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; [ $$rc -eq 0 ]
test: $(STAMP)
	scripts/ensure-postgres.sh
	scripts/ensure-etcd.sh
	scripts/ensure-lab-deps.sh
	scripts/ensure-fence-deps.sh
	scripts/ensure-rabbitmq.sh
	scripts/ensure-openstack.sh
	scripts/ensure-ops-deps.sh
	$(MAKE) --no-print-directory lint typecheck layers
	$(BIN)/pytest -q -m "not own_process"; $(PYTEST_TIER)
	$(BIN)/pytest -q -m own_process; $(PYTEST_TIER)

demo: $(STAMP)
	scripts/ensure-lab-deps.sh
	$(if $(filter openstack,$(CLOUD)),scripts/ensure-rabbitmq.sh && scripts/ensure-openstack.sh)
	$(BIN)/vmha demo $(if $(KEEP),--keep) $(if $(CLOUD),--cloud $(CLOUD))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
