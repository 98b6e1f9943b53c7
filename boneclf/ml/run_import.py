"""`bonedb runs import`: record in a database a run trained from an export where there was none."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine

from boneclf.errors import BonedbError
from boneclf.store.runs import RunRecord, record_imported_run

from .run_folder import RunFolder, write_json

REQUIRED = ("stage", "parts", "architecture", "parameters", "image_spec", "split_name", "split_hash", "status",
            "started_at")


def import_run(engine: Engine, run_dir: Path) -> RunRecord:
    """Record the finished run in RUN_DIR (made by `bonedb train --from-export`) on its stored split, in place:
    the run keeps its folder, whose config.json then names the new run id."""
    run_dir = Path(run_dir).absolute()
    folder = RunFolder(run_dir)
    path = folder.run_record
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BonedbError(f"{path}: missing; only a run trained with `bonedb train --from-export` can be "
                          "imported") from None
    except (OSError, ValueError) as exc:
        raise BonedbError(f"{path}: not readable JSON ({exc})") from None
    missing = [key for key in REQUIRED if key not in record] if isinstance(record, dict) else list(REQUIRED)
    if missing:
        raise BonedbError(f"{path}: lacks {', '.join(missing)}; it was not written by `bonedb train --from-export`")
    if record["status"] != "finished":
        raise BonedbError(f"{run_dir}: the run is {record['status']}, not finished ({record.get('error') or 'no error'}"
                          "); only finished runs can be imported: train it again")
    for needed in (folder.model, folder.class_names, folder.config):
        if not needed.is_file():
            raise BonedbError(f"{needed}: missing; the run's folder is incomplete, train it again")
    run = record_imported_run(engine, record, str(run_dir))
    config = json.loads(folder.config.read_text())
    config["run_id"] = run.id  # the folder is this run's own from now on (`runs delete` checks it)
    write_json(folder.config, config)
    return run
