"""Printing: plain tables for people, JSON for programs, progress bars only on a terminal."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager

import click

from boneclf.progress import ProgressFactory, silent


def progress_for(json_mode: bool) -> ProgressFactory:
    """A click progress bar on stderr when it is a terminal and output is not JSON; else silence."""
    if json_mode or not sys.stderr.isatty():
        return silent

    @contextmanager
    def bar(total: int, label: str):
        with click.progressbar(length=total, label=label, file=sys.stderr) as progress:
            yield progress.update

    return bar


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    """Left-aligned text, right-aligned numbers, a rule under the header."""
    if not rows:
        click.echo("(nothing)")
        return
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))  # every key, in first-seen order
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), (int, float)) for row in rows) for c in columns]

    def line(values):
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    click.echo(line(columns))
    click.echo(line(["-" * w for w in widths]))
    for r in cells:
        click.echo(line(r))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
