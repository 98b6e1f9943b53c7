"""`bonedb tune`: search training options with KerasTuner on one split; test the best once."""

from __future__ import annotations

import sys

import click

from boneclf.ml.backbones import REGISTRY
from boneclf.ml.models import AUGMENTATIONS
from boneclf.ml.train_config import TrainConfig
from boneclf.ml.tune_space import MAX_HOURS, MAX_TRIALS, TUNERS, TuneSpace
from boneclf.results import plural
from boneclf.vocabulary import FRACTURE, STAGES

from .context import Database, pass_db
from .options import json_option, parts_option, run_options
from .output import emit, print_table, progress_for
from .runs import print_evaluation

_SPACE = TuneSpace()


def _words(values) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _listed(kind, choices=None):
    def parse(_ctx, param, value):
        items = [item.strip() for item in value.split(",") if item.strip()]
        try:
            parsed = tuple(kind(item) for item in items)
        except ValueError:
            raise click.BadParameter(f"{value!r}: a comma-separated list") from None
        bad = [item for item in parsed if choices is not None and item not in choices]
        if not parsed or bad:
            raise click.BadParameter(f"{value!r}: choose from {', '.join(map(str, choices or ()))}")
        return parsed

    return parse


def _lr_range(_ctx, _param, value):
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: LOW,HIGH, e.g. 1e-4,3e-3 (equal ends fix it)") from None
    if not 0 < low <= high:
        raise click.BadParameter(f"{value!r}: 0 < LOW <= HIGH")
    return low, high


@click.command("tune")
@click.argument("name")
@click.option("--split", "split_name", required=True, metavar="NAME", help="The split every trial trains on.")
@click.option("--stage", type=click.Choice(STAGES), default=FRACTURE, show_default=True,
              help="Stage 2 (fracture) trains one model over the chosen parts (as train --shared).")
@parts_option("Body parts. Default: all in the split.")
@click.option("--arch", "archs", default=_words(_SPACE.archs), show_default=True, metavar="A,B",
              callback=_listed(str, list(REGISTRY)), help="Architectures searched.")
@click.option("--image-size", "sizes", default=_words(_SPACE.image_sizes), show_default=True, metavar="N,N",
              callback=_listed(int), help="Input sizes searched.")
@click.option("--lr", default=_words(_SPACE.lr), show_default=True, metavar="LOW,HIGH", callback=_lr_range,
              help="Learning-rate range, searched on a log scale.")
@click.option("--augment", "augments", default=_words(_SPACE.augments), show_default=True, metavar="A,B",
              callback=_listed(str, AUGMENTATIONS), help="Augmentations searched.")
@click.option("--epochs", "epochs", default=_words(_SPACE.epochs), show_default=True, metavar="N,N",
              callback=_listed(int), help="Epoch budgets searched (early stopping may end a run sooner).")
@run_options(weights_default="none", seed_help="Seed for the search, weights and shuffling.",
             runs_help="Run folders; the search's own state is in <runs-dir>/tune/NAME.")
@click.option("--max-trials", default=MAX_TRIALS, show_default=True, help="Trials in all, across resumes.")
@click.option("--max-hours", default=MAX_HOURS, show_default=True,
              help="No trial starts after this many hours of searching (across resumes).")
@click.option("--tuner", type=click.Choice(TUNERS), default=TUNERS[0], show_default=True,
              help="KerasTuner's Bayesian optimisation, or random search.")
@json_option
@pass_db
def tune(database: Database, name, split_name, stage, parts, archs, sizes, lr, augments, epochs, weights, batch_size,
         seed, patience, runs_dir, cache_dir, no_tensorboard, max_trials, max_hours, tuner, json_mode):
    """Search training options on --split with KerasTuner, as tune NAME; test the best run once.

    Each trial is an ordinary recorded run (`bonedb runs list`) on the same split, chosen by its
    validation score only (study kappa for stage 2, accuracy for stage 1). When the search ends
    the best run is evaluated on the test subset, once; the test subset never chooses. Ctrl-C
    stops it; the same command again continues (finished trials reused, the interrupted one
    resumed). The default budget (8 small from-scratch CNN trials, at most 2 hours) is sized for a 2-core
    CPU; with a GPU, raise --max-trials and widen --arch and --image-size.

    \b
    Examples:
      bonedb tune hs-search --split hs-v1 --parts humerus,shoulder
      bonedb tune quick --split demo --max-trials 3 --image-size 64 --epochs 10,20 --json
      bonedb tune big --split hs-v1 --arch densenet121,mobilenetv2 --weights imagenet --image-size 224 --max-hours 12
    """
    from boneclf.ml.tuning import tune as run_tune

    base = TrainConfig(stage=stage, split=split_name, parts=parts, weights=weights, batch_size=batch_size,
                       patience=patience, seed=seed, runs_dir=runs_dir, cache_dir=cache_dir,
                       tensorboard=not no_tensorboard)
    space = TuneSpace(archs, sizes, lr, augments, epochs)
    result = run_tune(database.engine, name, base, space, max_trials=max_trials, max_hours=max_hours, tuner=tuner,
                      progress=progress_for(json_mode), verbose=0 if json_mode else _verbose())
    emit(result, json_mode, _human)


def _verbose():
    return "auto" if sys.stdout.isatty() else 2


def _human(result) -> None:
    click.echo(f"tune {result.name!r} on split {result.split} ({result.stage}): {plural(len(result.trials), 'trial')}, "
               f"{result.hours:.2f} hours; stopped by {result.stopped}; chosen by {result.objective}")
    print_table([{"trial": t.trial, "run": t.run_id if t.run_id is not None else "-", "this time": t.how,
                  **{k: (f"{v:.2g}" if k == "lr" else v) for k, v in t.options.items()},
                  "validation": "-" if t.validation is None else round(t.validation, 3)} for t in result.trials])
    if result.best_run is None:
        click.echo("no trial has a validation score yet")
        return
    for note in result.notes:
        click.echo(f"warning: {note}", err=True)
    assert result.test is not None, "a tune with a best run has scored it on test"
    when = "now" if result.test_evaluated_now else "when the search first ended (test is scored once)"
    click.echo(f"best: run {result.best_run}; the test figures of run {result.test.run_id}, evaluated {when}:")
    print_evaluation(result.test)
