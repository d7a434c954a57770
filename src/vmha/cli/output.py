"""How the CLI shows things: rich tables for people, raw JSON for scripts.

Column specs are `(header, getter)` pairs so a resource's columns live in
one list each (host columns leave room for heartbeat age and phi later).
Used by the client commands; prints to stdout only.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

Row = Mapping[str, Any]
Column = tuple[str, Callable[[Row], Any]]

console = Console(highlight=False, soft_wrap=True)


def field(name: str) -> Callable[[Row], Any]:
    return lambda row: row.get(name)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def when(seconds: float | None) -> str:
    """Epoch seconds as UTC ISO text (second precision)."""
    if seconds is None:
        return "-"
    stamp = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


def print_table(rows: Sequence[Row], columns: Sequence[Column], title: str = "") -> None:
    table = Table(title=title or None, box=None, header_style="bold", pad_edge=False)
    for header, _ in columns:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(cell(get(row)) for _, get in columns))
    console.print(table)


def print_record(row: Row) -> None:
    """One resource as aligned `key  value` lines; nested mappings flattened."""
    flat = dict(_flatten(row))
    width = max((len(k) for k in flat), default=0)
    for key, value in flat.items():
        console.print(f"{key.ljust(width)}  {cell(value)}", markup=False)


def _flatten(row: Row, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.extend(_flatten(value, f"{name}."))
        else:
            out.append((name, value))
    return out


def print_page(page: Row, columns: Sequence[Column], as_json: bool) -> None:
    """A list answer `{items, next_marker}` as a table (or JSON)."""
    if as_json:
        print_json(page)
        return
    print_table(page["items"], columns)
    marker = page.get("next_marker")
    if marker:
        typer.echo(f"(more: repeat with --marker {marker})", err=True)
