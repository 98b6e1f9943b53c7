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


def _stacked(options):
    """One decorator applying OPTIONS in the order given (as if written one above the other)."""

    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def model_options(*, epochs_help: str = "Epochs of fine-tuning (or of end-to-end training).",
                  arch_help: str = "Default: mobilenetv2 (stage 1), densenet121 (stage 2)."):
    """What one model is: the options `train` and `labels suspects` share (`tune` searches them instead)."""
    from boneclf.ml.backbones import REGISTRY
    from boneclf.ml.models import AUGMENTATIONS

    return _stacked([
        click.option("--arch", type=click.Choice(list(REGISTRY)), help=arch_help),
        click.option("--image-size", type=int, help="Input size in pixels. Default: the architecture's (224; cnn "
                     "128)."),
        click.option("--epochs", default=10, show_default=True, help=epochs_help),
        click.option("--head-epochs", default=5, show_default=True, help="Phase 1 epochs (pretrained backbones)."),
        click.option("--lr", default=1e-3, show_default=True, help="Learning rate (phase 2 uses a tenth of it)."),
        click.option("--augment", type=click.Choice(AUGMENTATIONS), default="paper", show_default=True,
                     help="paper: rotation, shift, zoom, horizontal flip; flip: horizontal flip only."),
    ])


def run_options(*, weights_default: str = "imagenet", seed_help: str = "Seed for weights, shuffling and "
                "augmentation.", runs_help: str = "Where each run's folder (runs/<id>/) goes."):
    """How runs are trained and kept: the options every command that trains shares (train, labels suspects,
    tune), declared once so that they parse, default and read the same everywhere."""
    return _stacked([
        click.option("--weights", default=weights_default, show_default=True,
                     help="imagenet (Keras' download, cached), none (from scratch) or a no-top weights file."),
        click.option("--batch-size", default=32, show_default=True, help="Images per training step."),
        click.option("--seed", default=42, show_default=True, help=seed_help),
        click.option("--patience", default=5, show_default=True, help="Early-stopping patience in epochs."),
        click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
                     help=runs_help),
        click.option("--cache-dir", type=click.Path(file_okay=False), metavar="DIR",
                     help="The persistent decoded cache. Default: <runs-dir>/decoded-cache."),
        click.option("--no-tensorboard", is_flag=True, help="Do not write TensorBoard logs (runs/<id>/tensorboard)."),
    ])
