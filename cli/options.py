"""Options several commands share, declared once so they parse and read the same everywhere."""

from __future__ import annotations

import click

from boneclf.bodyparts import parse_parts
from boneclf.errors import BonedbError

json_option = click.option("--json", "json_mode", is_flag=True,
                           help="Print the result as JSON (for programs) instead of a table; no progress bars.")


def _parts(_ctx, _param, value):
    if value is None:
        return None
    try:
        return parse_parts(value)
    except BonedbError as exc:
        raise click.BadParameter(str(exc)) from None


def parts_option(help_text: str = "Body parts, e.g. humerus,shoulder."):
    """--parts PART,PART parsed into a sorted tuple; None when not given (each command says what that means)."""
    return click.option("--parts", metavar="PART,PART", callback=_parts, help=help_text)


def yes_option(what: str):
    return click.option("--yes", "-y", "yes", is_flag=True, help=f"Do not ask before {what}.")
