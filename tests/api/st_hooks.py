"""Schemathesis hooks of the full API run (bench/schemathesis_run.py and
tests/api/test_api_fuzz_live.py): `positive_data_acceptance`, except for
the rules a schema cannot state.

OpenAPI describes each request on its own. A few of vmha's 422 answers to
schema-valid requests depend on what is stored or on two fields together;
they are listed in DATA_DEPENDENT with the reason, and a 422 is accepted
only when every error it names is one of them. Everything else a schema
can say (types, ranges, lengths, patterns, enums, item counts) is declared
in /openapi.json, so any other 422 to schema-valid data is a failure.
"""

from __future__ import annotations

import json
import re
from typing import Any

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

# field (a regular expression over the problem's `errors[].field`) -> why
# the schema cannot say it.
DATA_DEPENDENT: dict[str, str] = {
    r"query\.marker": "must be the key of an existing item",
    r"body\.(segment|default_policy|policy_name|host)": "must name an existing resource",
    r"body\.fail(\[\d+\])?": "what-if: must name existing hosts",
    r"body\.spec": "exactly one of image and xml (two fields together)",
    r"body\.spec\.(address|gateway)": "an IP interface / address (parsed by ipaddress)",
    r"body\.spec\.image": "must be an image present under [cloud] image_dir",
    r"body\.ipmi_address": "a BMC needs an ipmi_address or a redfish_url (two fields); "
                           "a host name's labels are 1-63 characters",
    r"body\.redfish_url": "its host name's labels are 1-63 characters",
    r"body\.password": "IPMI passwords: 20 bytes when IPMI is used (two fields)",
    r"body\.policy\.probes\[\d+\]\.(target|timeout_s)":
        "depends on the probe kind / on interval_s (two fields)",
    r"body\.url": "webhook URL: every resolved address is checked (DNS)",
    # project tokens: what the admin offers them ([tenants], docs/api.md)
    r"body\.spec\.(bridge|health_url)": "tenants: an offered network, an allowed URL",
    r"body\.policy\.priority": "tenants: at most [tenants] max_priority",
    r"body\.agents\.\d+\.segment": "must name an existing segment",
}
# (field, message) -> why: rules of one field a pattern cannot state
MESSAGE_DEPENDENT: dict[tuple[str, str], str] = {
    (r"body\.policy\.app_actions\[\d+\]", r".*(cannot split .* into arguments|must name a "
     r"command to run).*"): "exec:<command> must split into shell words (balanced quotes)",
    (r"body\.policy\.app_actions\[\d+\]", r".*cannot rebuild an instance.*"):
        "rebuild needs a cloud that rebuilds instances (OpenStack's Nova)",
}


def exempt(field: str, message: str = "") -> bool:
    return any(re.fullmatch(pattern, field) for pattern in DATA_DEPENDENT) or any(
        re.fullmatch(f, field) and re.fullmatch(m, message, re.S)
        for f, m in MESSAGE_DEPENDENT)


@schemathesis.check
def positive_data_acceptance_except_data_dependent(ctx: Any, response: Any, case: Any) -> Any:
    """`positive_data_acceptance`, accepting a 422 whose errors all name
    data-dependent rules (DATA_DEPENDENT)."""
    if response.status_code == 422:
        try:
            errors = json.loads(response.content).get("errors") or []
        except ValueError:
            errors = []
        if errors and all(exempt(str(e.get("field", "")), str(e.get("message", "")))
                          for e in errors):
            return None
    return positive_data_acceptance(ctx, response, case)
