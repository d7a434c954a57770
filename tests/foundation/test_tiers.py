"""A tier that cannot run fails the run; only an explicit opt-out skips it
(tests/tiers.py), and the opt-outs are listed at the end."""

from __future__ import annotations

import pytest

import tiers
from tiers import SKIP_ENV, require_tier


def test_a_tier_that_cannot_run_fails_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SKIP_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception) as failed:
        require_tier("lab", "network namespaces need root")
    assert "the lab tier cannot run: network namespaces need root" in str(failed.value)
    assert f"{SKIP_ENV}=lab" in str(failed.value)


def test_only_the_tiers_named_are_opted_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiers, "opted_out", {})
    monkeypatch.setenv(SKIP_ENV, "postgres, lab")
    with pytest.raises(pytest.skip.Exception):
        require_tier("lab", "network namespaces need root")
    assert tiers.opted_out == {"lab": "network namespaces need root"}  # listed at the end
    with pytest.raises(pytest.fail.Exception):
        require_tier("etcd", "etcd is not installed")  # not named: it still fails
    monkeypatch.setenv(SKIP_ENV, "all")
    with pytest.raises(pytest.skip.Exception):
        require_tier("etcd", "etcd is not installed")


def test_a_tier_with_what_it_needs_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SKIP_ENV, "all")
    assert require_tier("lab", None) is None
    assert require_tier("lab", "") is None
