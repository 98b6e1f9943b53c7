"""`bonedb train`, `bonedb evaluate`, `bonedb weights import`: Keras jobs from recorded splits."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from boneclf.backbones import REGISTRY
from boneclf.bodyparts import parse_parts
from boneclf.models import AUGMENTATIONS
from boneclf.training import CACHE_MODES, TrainConfig, resume, train
from cli.main import cli
from cli.output import print_json, print_table, progress_for


def _verbose(json_mode: bool):
    if json_mode:
        return 0
    return "auto" if sys.stdout.isatty() else 2


@cli.command("train")
@click.option("--stage", type=click.Choice(["bodypart", "fracture"]), help="bodypart: which bone (stage 1); "
              "fracture: normal or abnormal (stage 2, MURA's label).")
@click.option("--split", "split_name", metavar="NAME", help="The split to train on (bonedb split create).")
@click.option("--parts", metavar="PART,PART", help="Body parts. Default: all in the split.")
@click.option("--shared", is_flag=True, help="Stage 2: one model over all chosen parts instead of one per part.")
@click.option("--arch", type=click.Choice(list(REGISTRY)), help="Default: mobilenetv2 (stage 1), densenet121 (stage 2).")
@click.option("--weights", default="imagenet", show_default=True,
              help="imagenet (Keras' download, cached), none (from scratch) or a no-top weights file.")
@click.option("--image-size", type=int, help="Input size in pixels. Default: the architecture's (224; cnn 128).")
@click.option("--epochs", default=10, show_default=True, help="Epochs of fine-tuning (or of end-to-end training).")
@click.option("--head-epochs", default=5, show_default=True, help="Phase 1 epochs (pretrained backbones).")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--lr", default=1e-3, show_default=True, help="Learning rate (phase 2 uses a tenth of it).")
@click.option("--seed", default=42, show_default=True)
@click.option("--fine-tune-from", default=0.3, show_default=True,
              help="Fraction of the backbone's top layers unfrozen in phase 2.")
@click.option("--mixed-precision", is_flag=True, help="float16 compute, float32 output layer (GPUs).")
@click.option("--pad", is_flag=True, help="Keep the aspect ratio: pad to square instead of stretching.")
@click.option("--canny", is_flag=True, help="Train on Canny edge maps, as the seed paper tried.")
@click.option("--augment", type=click.Choice(AUGMENTATIONS), default="paper", show_default=True,
              help="paper: rotation, shift, zoom, horizontal flip; flip: horizontal flip only.")
@click.option("--cache", type=click.Choice(CACHE_MODES), default="memory", show_default=True,
              help="Where decoded images are kept between epochs (disk: runs/<id>/cache).")
@click.option("--no-precompute", is_flag=True, help="Phase 1 runs the frozen backbone every epoch instead of once.")
@click.option("--patience", default=5, show_default=True, help="Early-stopping patience in epochs.")
@click.option("--no-tensorboard", is_flag=True)
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--resume", "resume_id", type=int, metavar="RUN", help="Continue interrupted run RUN.")
@click.option("--json", "json_mode", is_flag=True, help="One JSON line per run with run_id and validation metrics.")
@click.pass_obj
def train_(obj, stage, split_name, parts, shared, arch, weights, image_size, epochs, head_epochs, batch_size, lr,
           seed, fine_tune_from, mixed_precision, pad, canny, augment, cache, no_precompute, patience,
           no_tensorboard, runs_dir, resume_id, json_mode):
    """Train stage 1 (body part) or stage 2 (normal/abnormal) on split NAME; record the run.

    Every run is stored in the database (parameters, split and its hash, status, metrics) with
    its files in runs/<id>/: model.keras, class_names.json, history.json, config.json, logs.

    \b
    Examples:
      bonedb train --stage bodypart --split hs-v1                       # MobileNetV2, ImageNet weights
      bonedb train --stage fracture --split hs-v1 --parts humerus,shoulder --arch densenet121
      bonedb train --stage fracture --split hs-v1 --arch cnn --weights none --image-size 128 --epochs 30
      bonedb train --resume 7
    """
    progress, verbose = progress_for(json_mode), _verbose(json_mode)
    try:
        if resume_id is not None:
            results = [resume(obj.engine, resume_id, progress=progress, verbose=verbose)]
        else:
            if not stage or not split_name:
                raise click.UsageError("--stage and --split are required (or --resume RUN)")
            config = TrainConfig(
                stage=stage, split=split_name, parts=parse_parts(parts) if parts else None, shared=shared, arch=arch,
                weights=weights, image_size=image_size, epochs=epochs, head_epochs=head_epochs,
                batch_size=batch_size, lr=lr, seed=seed, fine_tune_from=fine_tune_from,
                mixed_precision=mixed_precision, pad=pad, canny=canny, augment=augment, cache=cache,
                precompute=not no_precompute, patience=patience, tensorboard=not no_tensorboard,
                runs_dir=runs_dir,
            )
            results = train(obj.engine, config, progress=progress, verbose=verbose)
    except KeyboardInterrupt:
        click.echo("error: interrupted; the run is marked interrupted: continue it with bonedb train --resume RUN",
                   err=True)
        sys.exit(130)
    for result in results:
        if json_mode:
            click.echo(_json_line(result))
            continue
        for path in result.skipped_images:
            click.echo(f"skipped (cannot decode): {path}", err=True)
        click.echo(f"run {result.run_id} {result.status}: {result.stage} {result.architecture} on "
                   f"{','.join(result.parts)}; {_headline(result.metrics)}; files in {result.artifact_dir}")


def _json_line(result) -> str:
    import json

    return json.dumps({"run_id": result.run_id, "stage": result.stage, "parts": result.parts,
                       "architecture": result.architecture, "status": result.status,
                       "val_metrics": result.metrics, "skipped_images": result.skipped_images}, default=str)


def _headline(metrics: dict) -> str:
    if "image" in metrics:
        return (f"val image accuracy {metrics['image']['accuracy']:.3f}, AUC {metrics['image']['auc']:.3f}, "
                f"study kappa {metrics['study']['kappa']:.3f}")
    return f"val accuracy {metrics.get('accuracy', float('nan')):.3f}"


@cli.command("evaluate")
@click.argument("run_id", type=int)
@click.option("--subset", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option("--json", "json_mode", is_flag=True)
@click.pass_obj
def evaluate_(obj, run_id, subset, json_mode):
    """Score finished run RUN_ID on its split's test subset, the way MURA is scored.

    Image level: accuracy, per-class precision/recall/F1, ROC AUC, confusion matrix. Study level
    (mean of a study's image probabilities, abnormal above 0.5): accuracy, Cohen's kappa and AUROC
    with bootstrap 95% intervals over studies. Per body part and overall; stored with the run.

    \b
    Example:
      bonedb evaluate 3 --subset test
    """
    from boneclf.evaluation import evaluate_run, per_part_rows
    from boneclf.metrics import format_report

    result = evaluate_run(obj.engine, run_id, subset)
    if json_mode:
        print_json(result)
        return
    overall = result["overall"]
    click.echo(f"run {run_id} ({result['stage']}, {result['architecture']}) on the {subset} subset")
    if result["stage"] == "bodypart":
        click.echo(format_report(overall["report"], overall["accuracy"]))
        click.echo(f"accuracy {overall['accuracy']:.3f} (95% CI {_ci(overall['accuracy_ci'])}), "
                   f"{overall['n']} images")
        _confusion(overall["confusion"], overall["class_names"])
        return
    click.echo(format_report(overall["image"]["report"], overall["image"]["accuracy"]))
    print_table(per_part_rows(result))
    _confusion(overall["image"]["confusion"], ["normal", "abnormal"])
    for path in result["skipped_images"]:
        click.echo(f"skipped (cannot decode): {path}", err=True)


def _ci(interval) -> str:
    from boneclf.evaluation import format_interval

    return format_interval(interval)


def _confusion(matrix, names) -> None:
    click.echo("confusion matrix (rows: truth, columns: prediction)")
    print_table([{"truth": name, **{n: v for n, v in zip(names, row)}} for name, row in zip(names, matrix)])


@cli.group()
def weights():
    """Pretrained weights for machines without internet."""


@weights.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--arch", type=click.Choice([n for n in REGISTRY if n != "cnn"]), required=True)
@click.option("--image-size", type=int, help="MobileNetV2 only: its weights file depends on the input size.")
def import_(file, arch, image_size):
    """Put a downloaded ImageNet weights FILE where Keras looks, so --weights imagenet works offline.

    \b
    Example:
      bonedb weights import densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5 --arch densenet121
    """
    from boneclf.weights import import_weights

    target = import_weights(file, arch, image_size)
    click.echo(f"imported {file} for {arch} as {target}")
