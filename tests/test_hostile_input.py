"""Every bonedb command that reads image files, fed each file of a hostile corpus (tests/hostile.py,
generated here, never committed): decompression bombs, a torn file, a FIFO, broken and escaping links,
names no database column or terminal takes.

Each command either refuses in one line naming the file, or (ingest --skip-bad, ingest-folder) leaves it
out and names it; the database and the disk are as they were, apart from what the README says is
recorded: the ingest log row of a refused ingest (`bonedb log`), and the files an ingest left out on
purpose (`bonedb audit dataset` lists them with their reason).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from boneclf.cli.main import cli
from boneclf.data.ingest import ingest_mura
from boneclf.data.splits import SplitOptions, create_split, split_image_paths
from boneclf.store.runs import list_runs
from boneclf.store.schema import Image as ImageRow
from boneclf.store.schema import IngestExclusion
from boneclf.vocabulary import BODY_PARTS

from conftest import ingest_outcomes, snapshot
from hostile import (
    broken_link,
    escaping_link,
    fifo,
    gif_frame_bomb,
    long_named,
    non_utf8_name,
    png_header_bomb,
    png_real_bomb,
    small_png,
    torn_png,
)


@pytest.fixture(scope="module")
def real_bomb(tmp_path_factory) -> bytes:
    return png_real_bomb(tmp_path_factory.mktemp("bomb") / "real.png").read_bytes()


@pytest.fixture(scope="module")
def frame_bomb(tmp_path_factory) -> bytes:
    return gif_frame_bomb(tmp_path_factory.mktemp("bomb") / "frames.gif").read_bytes()


# What each file is called in the message that names it (the file's own words, not the exact sentence).
SAYS = {
    "header bomb": "50000 x 50000", "real bomb": "20000 x 10000", "frame bomb": "x 400 frames",
    "torn file": "truncated", "fifo": "not a regular file", "broken link": "broken symbolic link",
    "escaping link": "outside", "non-UTF-8 name": "not UTF-8", "long path": "at most 512",
}
IN_PLACE = ["header bomb", "real bomb", "frame bomb", "torn file", "fifo", "broken link", "escaping link"]


@pytest.fixture
def make(tmp_path, real_bomb, frame_bomb):
    """make(kind, path): the hostile file of KIND at PATH (or, for names, in PATH's folder); its path."""
    outside = tmp_path / "outside"

    def made(kind: str, path: Path) -> Path:
        if path.exists() or path.is_symlink():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "header bomb":
            return png_header_bomb(path)
        if kind in ("real bomb", "frame bomb"):  # a GIF named .png: the bytes decide, not the name
            path.write_bytes(real_bomb if kind == "real bomb" else frame_bomb)
            return path
        return {"torn file": torn_png, "fifo": fifo, "broken link": broken_link,
                "escaping link": lambda p: escaping_link(p, outside),
                "non-UTF-8 name": lambda p: non_utf8_name(p.parent),
                "long path": lambda p: long_named(p.parent)}[kind](path)

    return made


def bonedb(args: list[str], url: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed command, in a process of its own: a regression that blocks on a FIFO times out here."""
    found = shutil.which("bonedb", path=str(Path(sys.executable).parent))
    env = {k: v for k, v in os.environ.items() if k != "BONEDB_DATABASE_URL"}
    return subprocess.run([found, "--database-url", url, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=180)


def disk(*folders: Path) -> list[tuple]:
    """Every entry under FOLDERS with its size and time, links not followed: equal lists, an unchanged disk."""
    entries = []
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            facts = path.lstat()
            entries.append((str(path), facts.st_size, facts.st_mtime_ns))
    return entries


def named(lines: list[str], path: Path | str, kind: str) -> list[str]:
    shown = os.fsencode(path).decode("utf-8", "backslashreplace")
    return [line for line in lines if (shown in line or Path(shown).name in line) and SAYS[kind] in line]


def clean(done: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in done.stderr and "unexpected" not in done.stderr, done.stderr


def folder_set(root: Path) -> Path:
    for i in range(3):
        small_png(root / "train" / "normal" / f"n{i}.png", shade=20 + 30 * i)
        small_png(root / "test" / "fractured" / f"f{i}.png", shade=25 + 30 * i)
    return root


def test_ingest_verify_names_every_hostile_file_then_skip_bad_leaves_them_out(db_url, engine, mura, tmp_path, make):
    lines = (mura / "MURA-v1.1" / "train_image_paths.csv").read_bytes().decode().splitlines()
    victims = dict(zip(IN_PLACE, lines[3::5]))
    for kind, relative in victims.items():
        make(kind, mura / relative)
    work = tmp_path / "work"
    work.mkdir()
    before, files = snapshot(engine, log=False), disk(mura, work)

    done = bonedb(["ingest", str(mura), "--verify"], db_url, work)
    clean(done)
    assert done.returncode == 1
    errors = done.stderr.strip().splitlines()
    assert all(line.startswith("error: ") for line in errors)
    for kind, relative in victims.items():
        assert len(named(errors, relative, kind)) == 1, (kind, errors)
    assert len(errors) == len(victims) + 1  # one line per file, then the summary
    assert snapshot(engine, log=False) == before and disk(mura, work) == files
    assert ingest_outcomes(engine) == ["refused"]  # README: a refused run is logged (`bonedb log`)

    done = bonedb(["ingest", str(mura), "--verify", "--skip-bad"], db_url, work)
    clean(done)
    assert done.returncode == 0
    skipped = [line for line in done.stderr.splitlines() if line.startswith("skipped: ")]
    for kind, relative in victims.items():
        assert len(named(skipped, relative, kind)) == 1, (kind, skipped)
    assert not [line for line in skipped if "--skip-bad" in line], "no advice to do what was done"
    assert f"left out {len(victims)} bad rows (--skip-bad)" in done.stdout, "the summary counts them too"
    assert disk(mura, work) == files
    with engine.connect() as conn:
        assert not set(victims.values()) & set(conn.execute(select(ImageRow.path)).scalars())
        recorded = set(conn.execute(select(IngestExclusion.path)).scalars())
    assert set(victims.values()) <= recorded
    audit = bonedb(["audit", "dataset", "mura-v1.1", "--quick"], db_url, work)  # README: listed with its reason
    section = audit.stdout.split("left out by ingest on purpose")[1].splitlines()
    for kind, relative in victims.items():
        [line] = named(section, relative, kind)
        assert line.count(relative) == 1, f"the path said once: {line}"


def test_ingest_folder_leaves_every_hostile_file_out_by_name(db_url, engine, tmp_path, make):
    root = folder_set(tmp_path / "set")
    made = {kind: make(kind, root / "train" / "normal" / f"hostile-{i}.png") for i, kind in enumerate(SAYS)}
    work = tmp_path / "work"
    work.mkdir()
    files = disk(root, work)
    done = bonedb(["ingest-folder", str(root), "--dataset", "set"], db_url, work)
    clean(done)
    assert done.returncode == 0, done.stderr
    left = [line for line in done.stderr.splitlines() if line.startswith("left out: ")]
    for kind, path in made.items():
        assert len(named(left, path, kind)) == 1, (kind, left)
    assert disk(root, work) == files
    with engine.connect() as conn:
        assert len(conn.execute(select(ImageRow.path)).all()) == 6
        recorded = dict(conn.execute(select(IngestExclusion.path, IngestExclusion.reason)).all())
    for kind, path in made.items():  # names no row can hold are named, not recorded
        if kind not in ("non-UTF-8 name", "long path"):
            assert SAYS[kind] in recorded[path.relative_to(root).as_posix()], kind


def test_ingest_folder_of_one_hostile_file_is_refused_in_one_line(db_url, engine, tmp_path, make):
    before = snapshot(engine, log=False)
    for i, kind in enumerate(SAYS):
        alone = tmp_path / f"alone-{i}"
        make(kind, alone / "normal" / "hostile.png")
        args = ["ingest-folder", str(alone), "--dataset", f"alone-{i}"]
        if kind == "fifo":  # in a process of its own: a regression that blocks times out
            done = bonedb(args, db_url, tmp_path)
            clean(done)
            code, errors = done.returncode, done.stderr
        else:
            result = CliRunner().invoke(cli, ["--database-url", db_url, *args], catch_exceptions=False)
            code, errors = result.exit_code, result.stderr
        assert code == 1, kind
        [line] = errors.strip().splitlines()
        assert line.startswith("error: ") and SAYS[kind] in line, (kind, line)
    assert snapshot(engine, log=False) == before
    assert ingest_outcomes(engine) == ["refused"] * len(SAYS)


# A link out of the root is refused when ingested; one made later is read as the user's own choice.
READ_LATER = [kind for kind in IN_PLACE if kind != "escaping link"]


def test_commands_reading_ingested_files_name_those_turned_hostile(db_url, engine, mura, tmp_path, make):
    ingest_mura(engine, mura)  # without --verify: nothing read, nothing hashed yet
    create_split(engine, "s", SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", val=0.15, test=0.15, seed=1))
    with engine.connect() as conn:
        rows = conn.execute(select(ImageRow).order_by(ImageRow.id)).all()[:len(READ_LATER)]
    victims = {kind: row for kind, row in zip(READ_LATER, rows)}
    for kind, row in victims.items():
        make(kind, mura / row.path)
    work = tmp_path / "work"
    work.mkdir()
    files = disk(mura, work)

    for args, stream in ((["audit", "split", "s"], "stdout"), (["duplicates", "compute"], "stderr")):
        done = bonedb(args, db_url, work)
        clean(done)
        lines = getattr(done, stream).splitlines()
        for kind, row in victims.items():
            assert named(lines, row.path, kind), (args, kind, lines)
    with engine.connect() as conn:  # the hostile files' rows are as they were: nothing read, nothing stored
        after = {row.id: row for row in conn.execute(select(ImageRow).where(
            ImageRow.id.in_([row.id for row in victims.values()])))}
    assert all(after[row.id] == row for row in victims.values())

    done = bonedb(["export", "s", str(work / "ex")], db_url, work)  # export reads no pixels: it stops at the first
    clean(done)                                                     # file it cannot link (the FIFO, the broken link)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "nothing was exported" in line and any(
        victims[kind].path in line and SAYS[kind] in line for kind in ("fifo", "broken link")), line
    assert disk(mura, work) == files

    from boneclf.web.app import create_app

    with TestClient(create_app(db_url, cache_dir=work / "cache")) as client:
        for kind, row in victims.items():
            response = client.get(f"/images/{row.id}/thumbnail")
            assert response.status_code in (404, 422) and "Traceback" not in response.text, (kind, response.text)


def test_train_evaluate_and_gradcam_leave_out_files_turned_hostile_by_name(db_url, engine, mura, tmp_path, make):
    """Files of a split turned hostile after ingest: training (train subset) and evaluation (test subset) leave
    each out, named with why, and never hand it to TensorFlow, whose decoder takes gigabytes for a bomb and
    blocks on a FIFO; the server's Grad-CAM of one answers a refusal, not a traceback."""
    ingest_mura(engine, mura)  # without --verify: no stored hashes, so training reads every file itself
    create_split(engine, "s", SplitOptions("mura-v1.1", BODY_PARTS, test_from="carve", val=0.15, test=0.15, seed=1))
    paths = split_image_paths(engine, "s")
    victims = {subset: dict(zip(READ_LATER, paths[subset])) for subset in ("train", "test")}
    for chosen in victims.values():
        for kind, path in chosen.items():
            make(kind, mura / path)
    work = tmp_path / "work"
    work.mkdir()

    done = bonedb(["train", "--stage", "fracture", "--split", "s", "--shared", "--arch", "cnn", "--weights", "none",
                   "--image-size", "32", "--epochs", "1", "--runs-dir", str(work / "runs")], db_url, work)
    clean(done)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    for kind, path in victims["train"].items():
        assert named(lines, path, kind), (kind, lines)
    [run] = list_runs(engine)
    assert run.status == "finished" and run.metrics["skipped_images"] == len(READ_LATER)

    done = bonedb(["evaluate", str(run.id)], db_url, work)
    clean(done)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    for kind, path in victims["test"].items():
        assert named(lines, path, kind), (kind, lines)

    from boneclf.web.app import create_app

    with engine.connect() as conn:
        ids = dict(conn.execute(select(ImageRow.path, ImageRow.id).where(
            ImageRow.path.in_(list(victims["test"].values())))).all())
    with TestClient(create_app(db_url, cache_dir=work / "cache")) as client:
        for kind, path in victims["test"].items():
            response = client.get(f"/runs/{run.id}/gradcam/{ids[path]}.png")
            assert response.status_code in (404, 422) and "Traceback" not in response.text, (kind, response.text)


def test_predict_names_each_hostile_file_in_one_line(trained, tmp_path, make):
    made = {kind: make(kind, tmp_path / "in" / f"xray-{i}.png") for i, kind in enumerate(READ_LATER)}
    url = trained.engine.url.render_as_string(hide_password=False)
    done = bonedb(["predict", *map(str, made.values()), "--fracture-run", str(trained.fracture_run)], url, tmp_path)
    clean(done)
    assert done.returncode == 1
    errors = [line for line in done.stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert len(errors) == len(made), errors
    for kind, path in made.items():
        [line] = [line for line in errors if line.startswith(f"error: {path}: ")]
        assert SAYS[kind] in line or kind == "torn file" and "not a readable image" in line, line


def test_the_corpus_is_what_it_claims(tmp_path, make):
    """The generated files are the hostile things the issue describes (so the tests above test those)."""
    assert make("header bomb", tmp_path / "a.png").stat().st_size == 69
    assert make("real bomb", tmp_path / "b.png").stat().st_size < 250_000
    assert len(str(make("long path", tmp_path / "deep" / "x.png").relative_to(tmp_path / "deep"))) > 512
    assert not make("broken link", tmp_path / "c.png").exists()
