"""Printing: plain tables for people, JSON or CSV for programs, progress bars only on a terminal."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import Any

import click

from boneclf.progress import ProgressFactory, silent
from boneclf.results import plain


def progress_for(json_mode: bool) -> ProgressFactory:
    """A click progress bar on stderr when it is a terminal and output is not JSON; else silence."""
    if json_mode or not sys.stderr.isatty():
        return silent

    @contextmanager
    def bar(total: int, label: str):
        with click.progressbar(length=total, label=label, file=sys.stderr) as progress:
            yield progress.update

    return bar


def print_json(data: Any) -> None:
    """Any library result (dataclass with to_dict, NamedTuple, list, dict) as indented JSON."""
    click.echo(json.dumps(plain(data), indent=2, default=str))


def emit(result: Any, json_mode: bool, human: Callable[[Any], None]) -> None:
    """The one way commands print a result: JSON on request, else the command's own human layout."""
    if json_mode:
        print_json(result)
    else:
        human(result)


def _rows(rows: Iterable[Any]) -> list[dict]:
    return [row if isinstance(row, dict) else plain(row) for row in rows]


def print_table(rows: Iterable[Any], columns: list[str] | None = None) -> None:
    """Left-aligned text, right-aligned numbers, a rule under the header."""
    rows = _rows(rows)
    if not rows:
        click.echo("(nothing)")
        return
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))  # every key, in first-seen order
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in rows) for c in columns]

    def line(values):
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    click.echo(line(columns))
    click.echo(line(["-" * w for w in widths]))
    for r in cells:
        click.echo(line(r))


def print_csv(rows: Iterable[Any], columns: list[str] | None = None) -> None:
    """Rows as CSV with a header, through pandas (the tables people take into spreadsheets)."""
    import pandas as pd

    frame = pd.DataFrame(_rows(rows), columns=columns)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    click.echo(buffer.getvalue(), nl=False)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)
