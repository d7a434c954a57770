"""Keeping secrets out of what people read: messages, logs, `config show`.

`looks_secret(name)` says whether a key or parameter name may hold a
secret (password, passwd, secret, token, key, credential ...);
`hide_password(url)` masks a URL's password and its secret-looking query
parameters; `hidden_value(key, value)` is what a message may show of a
configuration value.

The rule (STYLE.md habit 11): never echo a value that is or may be a
secret. A value whose key is unknown may be anything (a misspelt
`password`), so it is never shown either. Used by vmha.config, the store
engine's messages and the API's access log. No I/O; standard library only.
"""

from __future__ import annotations

import logging
from typing import Any

from vmha.domain.bmc import SECRET_OPTION_WORDS

SECRET_WORDS = (*SECRET_OPTION_WORDS, "credential")
MASK = "***"


def looks_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def hide_password(url: str) -> str:
    """`postgresql://u:secret@h/db?password=x` -> `postgresql://u:***@h/db?password=***`.

    The password runs to the *last* `@` of the part after `://` (a password
    may contain `@`); what cannot be told apart is masked rather than shown.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, qmark, query = rest.partition("?")
    userinfo, at, hostpart = rest.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        rest = f"{user}:{MASK}@{hostpart}" if colon else f"{user}@{hostpart}"
    if qmark:
        params = []
        for param in query.split("&"):
            name, eq, _value = param.partition("=")
            params.append(f"{name}={MASK}" if eq and looks_secret(name) else param)
        rest = f"{rest}?{'&'.join(params)}"
    return f"{scheme}://{rest}"


def hidden_value(key: str, value: Any, *, known: bool = True) -> str:
    """What a configuration message may show of `value` set at `key`:
    `***` for secret-looking keys, nothing for unknown keys, URLs without
    their password, `{...}` for whole tables (they may hold a password)."""
    last = key.rsplit(".", 1)[-1]
    if not known:
        return "(value not shown)"
    if looks_secret(key):
        return MASK
    if isinstance(value, dict):
        return "{...}"
    if isinstance(value, str) and (last.endswith("url") or "://" in value):
        return repr(hide_password(value))
    return repr(value)


def scrub(text: str, value: Any, shown: str) -> str:
    """`text` (a validator's message) with the raw `value` replaced by what
    may be shown of it, for validators that quote the value they refuse."""
    if isinstance(value, str) and value and value not in shown:
        return text.replace(repr(value), shown).replace(value, shown)
    return text


SECRET_PATHS = ("/v1/decisions/",)  # the next path segment is a capability token


def redact_path(path: str) -> str:
    """A request path fit for a log line: the decision token of the old
    `POST /v1/decisions/{token}` route and secret-looking query parameters
    masked."""
    for prefix in SECRET_PATHS:
        if path.startswith(prefix) and len(path) > len(prefix):
            path = prefix + MASK
    return hide_password(f"x://h{path}").removeprefix("x://h") if "?" in path else path


class AccessLogRedactor(logging.Filter):
    """Rewrites uvicorn's access log records (`client, method, path,
    version, status`) so a token in a path never reaches a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_path(args[2]), *args[3:])
        return True


def redact_access_log(logger_name: str = "uvicorn.access") -> None:
    """Install the redactor on the access logger (once per process)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, AccessLogRedactor) for f in logger.filters):
        logger.addFilter(AccessLogRedactor())
