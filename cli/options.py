"""Options several commands share, declared once so they parse and read the same everywhere."""

from __future__ import annotations

import sys

import click

from boneclf.data.names import check_name
from boneclf.errors import BonedbError
from boneclf.vocabulary import parse_parts

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


def new_name(kind: str):
    """A click callback: the name a command is about to create (a dataset, a split), checked as a usage
    error before any work (empty, too long for its column, not UTF-8)."""

    def check(_ctx, param, value):
        if value is None:
            return None
        try:
            option = param.opts[0] if param.opts[0].startswith("-") else param.human_readable_name
            return check_name(kind, value, option)
        except BonedbError as exc:
            raise click.BadParameter(str(exc)) from None

    return check


def yes_option(what: str):
    return click.option("--yes", "-y", "yes", is_flag=True, help=f"Do not ask before {what}.")


def confirmer(yes: bool):
    """What destructive library calls get as `confirm(action)`: --yes agrees, a terminal asks, anything
    else (a script, a pipe) is refused, so nothing is destroyed without someone having said so."""

    def confirm(action: str) -> bool:
        if yes:
            return True
        if sys.stdin.isatty():
            return click.confirm(f"This will {action}. Continue?", default=False, abort=True, err=True)
        raise BonedbError(f"this would {action}: pass --yes to confirm (there is no terminal to ask on)")

    return confirm
