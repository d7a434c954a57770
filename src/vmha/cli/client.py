"""The CLI's HTTP client for the vmha REST API, and its one-line errors.

`ApiClient` sends requests with httpx and returns decoded JSON; anything
that goes wrong becomes a `CliError` whose message is one readable line
(`404 Not found: host 'h9' does not exist`, or how to reach the server).
`@cli_errors` on a command prints that line on stderr as `error: ...` and
exits with the error's code; users never see a traceback.

Used by the client commands of `vmha.cli`; it never talks to the store.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import httpx
import typer
import yaml

DEFAULT_URL = "http://127.0.0.1:8790"
TIMEOUT_S = 10.0

P = ParamSpec("P")
R = TypeVar("R")


class CliError(Exception):
    """A failure to show as one line; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def cli_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Print a CliError as `error: <message>` on stderr and exit."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except CliError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(exc.code) from None

    return wrapper


def describe_problem(response: httpx.Response) -> str:
    """`<status> <title>: <detail>` from a problem+json body (or the text)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "title" in body:
        detail = str(body.get("detail") or "").replace("\n", " ")
        return f"{response.status_code} {body['title']}: {detail}".rstrip(": ")
    text = " ".join(response.text.split())[:200]
    return f"{response.status_code} {response.reason_phrase}: {text}".rstrip(": ")


def auth_headers(token: str | None) -> dict[str, str]:
    """The Authorization header for `token`; CliError (exit 2) for a token
    that cannot be sent in a header (tokens are printable ASCII)."""
    if not token:
        return {}
    if not (token.isascii() and token.isprintable()):
        raise CliError("the API token contains non-ASCII or control characters; tokens are "
                       "printable ASCII: check --token or VMHA_TOKEN", code=2)
    return {"Authorization": f"Bearer {token}"}


class ApiClient:
    """Thin JSON client; `transport` lets tests plug in an ASGI app."""

    def __init__(
        self, url: str, token: str | None, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers=auth_headers(token), timeout=TIMEOUT_S, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise CliError(
                f"cannot reach the vmha API at {self.url} ({_reason(exc)}); start it with "
                "'vmha serve' or point --url / VMHA_URL at a running controller"
            ) from exc
        except httpx.TimeoutException as exc:
            raise CliError(
                f"the vmha API at {self.url} did not answer within {TIMEOUT_S:g} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise CliError(f"request to {self.url} failed: {_reason(exc)}") from exc
        if response.status_code >= 400:
            raise CliError(describe_problem(response))
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(f"{self.url}{path} did not answer JSON; is --url a vmha API?") from exc

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=_clean(params or {}))

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.request("POST", path, json=dict(body))

    def patch(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.request("PATCH", path, json=dict(body))

    def delete(self, path: str) -> None:
        self.request("DELETE", path)


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return "connection refused" if "refused" in text.lower() else text


def _clean(params: Mapping[str, Any]) -> dict[str, Any]:
    """Drop unset query parameters; booleans as true/false."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None or value == []:
            continue
        out[key] = str(value).lower() if isinstance(value, bool) else value
    return out


def connect(url: str, token: str | None) -> ApiClient:
    return ApiClient(url, token)


def read_data_file(path: Path) -> dict[str, Any]:
    """A JSON or YAML mapping from `path` (YAML is a superset of JSON)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise CliError(f"cannot read {str(path)!r}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise CliError(f"{path}: not valid JSON/YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise CliError(f"{path}: must hold a mapping of policy keys (host, guest, app, ...)")
    return data


# Options every client command takes (typer Annotated aliases).
Url = Annotated[
    str, typer.Option("--url", envvar="VMHA_URL", help="Base URL of the vmha API.")
]
Token = Annotated[
    str | None,
    typer.Option("--token", envvar="VMHA_TOKEN", help="API bearer token.", show_default=False),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")]
