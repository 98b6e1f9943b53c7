"""`bonedb train` and `bonedb weights import`: Keras jobs from recorded splits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from boneclf.ml.backbones import REGISTRY
from boneclf.ml.train_config import CACHE_MODES, TrainConfig
from boneclf.ml.training import RunResult, resume
from boneclf.ml.training import train as train_stage
from boneclf.vocabulary import STAGES

from .context import Database, pass_db
from .options import json_option, model_options, parts_option, run_options
from .output import progress_for


def _verbose(json_mode: bool):
    if json_mode:
        return 0
    return "auto" if sys.stdout.isatty() else 2


@click.command("train")
@click.option("--stage", type=click.Choice(STAGES), help="bodypart: which bone (stage 1); "
              "fracture: normal or abnormal (stage 2, MURA's label).")
@click.option("--split", "split_name", metavar="NAME", help="The split to train on (bonedb split create).")
@click.option("--from-export", "from_export", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Train from an export folder (class folders or TFRecord shards) instead of --split, with no "
              "database; the run folder is recorded later with `bonedb runs import`.")
@parts_option("Body parts. Default: all in the split.")
@click.option("--shared", is_flag=True, help="Stage 2: one model over all chosen parts instead of one per part.")
@model_options()
@run_options()
@click.option("--fine-tune-from", default=0.3, show_default=True,
              help="Fraction of the backbone's top layers unfrozen in phase 2.")
@click.option("--mixed-precision", is_flag=True, help="float16 compute, float32 output layer (GPUs).")
@click.option("--pad", is_flag=True, help="Keep the aspect ratio: pad to square instead of stretching.")
@click.option("--canny", is_flag=True, help="Train on Canny edge maps, as the seed paper tried.")
@click.option("--cache", type=click.Choice(CACHE_MODES), default="persistent", show_default=True,
              help="Where decoded images are kept. persistent: in --cache-dir across runs (keyed by each file's "
              "content hash and the image spec: a second run at the same size decodes nothing) and in memory; "
              "memory: for this run only; disk: runs/<id>/cache; none: decoded every epoch.")
@click.option("--no-precompute", is_flag=True, help="Phase 1 runs the frozen backbone every epoch instead of once.")
@click.option("--resume", "resume_id", type=int, metavar="RUN",
              help="Continue interrupted or failed run RUN from its last epoch, with its recorded options; "
              "only --no-tensorboard, --batch-size, --cache, --epochs and --patience may change.")
@json_option
@pass_db
def train(database: Database, stage, split_name, parts, shared, arch, weights, image_size, epochs, head_epochs,
          batch_size, lr, seed, fine_tune_from, mixed_precision, pad, canny, augment, cache, cache_dir, no_precompute,
          patience,
          no_tensorboard, runs_dir, resume_id, from_export, json_mode):
    """Train stage 1 (body part) or stage 2 (normal/abnormal) on split NAME; record the run.

    Every run is stored in the database (parameters, image spec, split and its hash, label version,
    status, metrics) with its files in runs/<id>/: model.keras, class_names.json, history.json,
    config.json, CSV logs and TensorBoard logs (`tensorboard --logdir runs`). Stage 2 trains on the
    labels the split pinned when it was made; a warning says when the dataset's labels changed
    since. Ctrl-C marks the run interrupted and names the --resume that continues it.

    \b
    Examples:
      bonedb train --stage bodypart --split hs-v1                       # MobileNetV2, ImageNet weights
      bonedb train --stage fracture --split hs-v1 --parts humerus,shoulder --arch densenet121
      bonedb train --stage fracture --split hs-v1 --arch cnn --weights none --image-size 128 --epochs 30
      bonedb train --resume 7 --no-tensorboard --batch-size 16
      bonedb train --stage fracture --shared --from-export exports/shards-224 --arch cnn --weights none
    """
    progress, verbose = progress_for(json_mode), _verbose(json_mode)
    if resume_id is not None:
        changes = _given_on_resume(click.get_current_context())
        results = [resume(database.engine, resume_id, changes=changes, progress=progress, verbose=verbose)]
    else:
        if not stage or not (split_name or from_export):
            raise click.UsageError("--stage and --split (or --from-export DIR) are required (or --resume RUN)")
        if split_name and from_export:
            raise click.UsageError("--split and --from-export exclude each other: an export names its split")
        config = TrainConfig(
            stage=stage, split=split_name or "", from_export=str(from_export) if from_export else None,
            parts=parts, shared=shared, arch=arch, weights=weights,
            image_size=image_size, epochs=epochs, head_epochs=head_epochs, batch_size=batch_size, lr=lr,
            seed=seed, fine_tune_from=fine_tune_from, mixed_precision=mixed_precision, pad=pad, canny=canny,
            augment=augment, cache=cache, cache_dir=cache_dir, precompute=not no_precompute, patience=patience,
            tensorboard=not no_tensorboard, runs_dir=runs_dir,
        )
        engine = None if from_export else database.engine  # from an export: no database at all
        results = train_stage(engine, config, progress=progress, verbose=verbose)
    for result in results:
        if json_mode:
            click.echo(json.dumps(result.to_dict(), default=str))  # one line per run, as it finishes
        else:
            _human(result)


# TrainConfig fields set by options whose names differ (the flags negate them).
_FIELDS = {"split_name": "split", "no_tensorboard": "tensorboard", "no_precompute": "precompute"}


def _given_on_resume(ctx: click.Context) -> dict:
    """The training options typed on the command line next to --resume, as TrainConfig fields;
    the library accepts those that may change on resume and refuses the others by name."""
    changes = {}
    for name, value in ctx.params.items():
        if name in ("resume_id", "json_mode") or ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE:
            continue
        field = _FIELDS.get(name, name)
        changes[field] = not value if name.startswith("no_") else value
    return changes


def _human(result: RunResult) -> None:
    for note in result.notes:
        click.echo(f"warning: {note}", err=True)
    for path in result.skipped_images:
        click.echo(f"skipped (cannot decode): {path}: {result.skip_reasons.get(path, 'not a readable image')}",
                   err=True)
    changes = result.label_changes
    if changes is not None and changes.changed:
        click.echo(f"warning: {changes.describe()}; run {result.run_id} trained on the split's pinned labels "
                   f"(`bonedb split create NEW --from {changes.split}` re-bases it on today's)", err=True)
    if result.run_id is None:
        click.echo(f"{result.status}: {result.stage} {result.architecture} on {','.join(result.parts)}; "
                   f"{result.headline()}; files in {result.artifact_dir} (record it with `bonedb runs import "
                   f"{result.artifact_dir}`)")
        return
    click.echo(f"run {result.run_id} {result.status}: {result.stage} {result.architecture} on "
               f"{','.join(result.parts)}; {result.headline()}; files in {result.artifact_dir}")
    synthetic = result.synthetic_note()
    if synthetic:
        click.echo(f"note: {synthetic}")


@click.group()
def weights():
    """Pretrained weights for machines without internet.

    \b
    Example:
      bonedb weights import densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5 --arch densenet121
    """


@weights.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--arch", type=click.Choice([n for n in REGISTRY if n != "cnn"]), required=True,
              help="The architecture the file belongs to.")
@click.option("--image-size", type=int, help="MobileNetV2 only: its weights file depends on the input size.")
def import_(file, arch, image_size):
    """Put a downloaded ImageNet weights FILE where Keras looks, so --weights imagenet works offline.

    \b
    Example:
      bonedb weights import densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5 --arch densenet121
    """
    from boneclf.ml.weights import import_weights

    target = import_weights(file, arch, image_size)
    click.echo(f"imported {file} for {arch} as {target}")
