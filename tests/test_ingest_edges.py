"""Ingest at its edges: links, FIFOs, names and numbers no column takes, options that cannot work, a
dataset read from a new folder, a source split that shares files across subsets, Pillow's warnings.

Each refusal is one line naming the file or option with its remedy; nothing is written, and a usage
mistake is not logged as an ingest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import select

from boneclf.cli.main import cli
from boneclf.data.ingest import ingest_mura
from boneclf.store.schema import Dataset, IngestExclusion
from boneclf.store.schema import Image as ImageRow

from conftest import ingest_outcomes, snapshot
from hostile import broken_link, escaping_link, fifo, long_named, non_utf8_name, small_png


def run(args, url):
    return CliRunner().invoke(cli, ["--database-url", url, *args], catch_exceptions=False)


def bonedb() -> str:
    found = shutil.which("bonedb", path=str(Path(sys.executable).parent))
    assert found, "install the package: no bonedb console script"
    return found


def listed(mura: Path, split: str = "train") -> list[str]:
    return (mura / "MURA-v1.1" / f"{split}_image_paths.csv").read_bytes().decode().splitlines()


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.output and "unexpected" not in result.output, result.output
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def folder_set(root: Path, images: int = 4) -> Path:
    for i in range(images):
        small_png(root / "train" / ("fractured" if i % 2 else "normal") / f"a{i}.png", shade=30 * i)
        small_png(root / "test" / ("fractured" if i % 2 else "normal") / f"b{i}.png", shade=30 * i + 15)
    return root


# -- links ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("verify", [["--verify"], []], ids=["verify", "plain"])
def test_ingest_refuses_a_link_out_of_the_root_unless_told(db_url, engine, mura, tmp_path, verify):
    """With --verify or without (then no file is opened, but the path is resolved): export and training would
    otherwise read a file beyond the dataset."""
    victim = listed(mura)[4]
    (mura / victim).unlink()
    escaping_link(mura / victim, tmp_path / "elsewhere")
    before = snapshot(engine, log=False)
    result = run(["ingest", str(mura), *verify], db_url)
    assert result.exit_code == 1
    [line] = [line for line in error_lines(result) if victim in line]
    assert "a symbolic link to" in line and "outside the dataset folder" in line and "--follow-symlinks" in line
    assert snapshot(engine, log=False) == before

    assert run(["ingest", str(mura), *verify, "--skip-bad"], db_url).exit_code == 0
    with engine.connect() as conn:
        assert victim not in set(conn.execute(select(ImageRow.path)).scalars())
        assert "symbolic link" in conn.execute(select(IngestExclusion.reason)
                                               .where(IngestExclusion.path == victim)).scalar_one()
    assert run(["ingest", str(mura), *verify, "--follow-symlinks"], db_url).exit_code == 0
    with engine.connect() as conn:
        assert victim in set(conn.execute(select(ImageRow.path)).scalars())


def test_ingest_folder_refuses_links_out_of_the_root_file_or_folder(db_url, engine, tmp_path):
    root = folder_set(tmp_path / "set")
    escaping_link(root / "train" / "normal" / "linked.png", tmp_path / "elsewhere")
    result = run(["ingest-folder", str(root), "--dataset", "set"], db_url)
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.stderr.splitlines() if "linked.png" in line]
    assert line.startswith("left out: refused ") and "outside" in line and "--follow-symlinks" in line

    outside = tmp_path / "outside-folder"
    small_png(outside / "x.png")
    other = folder_set(tmp_path / "other")
    os.symlink(outside, other / "train" / "abnormal")
    before = snapshot(engine, log=False)
    result = run(["ingest-folder", str(other), "--dataset", "other"], db_url)
    assert result.exit_code == 1
    assert any("train/abnormal" in line and "outside" in line and "--follow-symlinks" in line
               for line in error_lines(result))
    assert snapshot(engine, log=False) == before
    result = run(["ingest-folder", str(other), "--dataset", "other", "--follow-symlinks"], db_url)
    assert result.exit_code == 0, result.output


def test_a_broken_link_is_named_not_an_unexpected_error(db_url, engine, mura, tmp_path):
    victim = listed(mura)[2]
    (mura / victim).unlink()
    broken_link(mura / victim)
    before = snapshot(engine, log=False)
    result = run(["ingest", str(mura), "--verify"], db_url)
    assert result.exit_code == 1
    [line] = [line for line in error_lines(result) if victim in line]
    assert "a broken symbolic link" in line
    assert snapshot(engine, log=False) == before

    root = folder_set(tmp_path / "set")
    broken_link(root / "train" / "normal" / "gone.png")
    result = run(["ingest-folder", str(root), "--dataset", "set"], db_url)
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.stderr.splitlines() if "gone.png" in line]
    assert "broken symbolic link" in line


# -- files that are not files, names no row takes ----------------------------------------------------------

def test_a_fifo_named_like_an_image_is_refused_at_once(db_url, engine, mura, tmp_path):
    victim = listed(mura)[1]
    (mura / victim).unlink()
    fifo(mura / victim)
    env = {**os.environ, "BONEDB_DATABASE_URL": db_url}
    done = subprocess.run([bonedb(), "ingest", str(mura), "--verify"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert any(victim in line and "not a regular file (a FIFO)" in line for line in done.stderr.splitlines())

    root = folder_set(tmp_path / "set")
    fifo(root / "train" / "normal" / "pipe.png")
    done = subprocess.run([bonedb(), "ingest-folder", str(root), "--dataset", "set"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert any("pipe.png" in line and "not a regular file" in line for line in done.stderr.splitlines())


def test_names_no_column_or_terminal_takes_are_left_out_by_name(db_url, engine, tmp_path):
    root = folder_set(tmp_path / "set")
    non_utf8_name(root / "train" / "normal")
    long_named(root / "test" / "fractured")
    result = run(["ingest-folder", str(root), "--dataset", "set"], db_url)
    assert result.exit_code == 0, result.output
    left = [line for line in result.stderr.splitlines() if line.startswith("left out: ")]
    assert any("caf\\xe9.png" in line and "not UTF-8" in line for line in left), left
    assert any("image1.png" in line and "bonedb keeps at most 512" in line for line in left), left
    with engine.connect() as conn:
        assert len(conn.execute(select(ImageRow.path)).all()) == 8


@pytest.mark.parametrize(("make", "expected"), [
    (lambda path: path.replace("image1.png", "image99999999999999999999.png"),
     "image number 99999999999999999999 in"),
    (lambda path: path.replace("/study1_", "/study99999999999999999999_"), "study number 99999999999999999999"),
    (lambda path: path.replace("/study1_", "/" + "x" * 500 + "/study1_"), "bonedb keeps at most 512"),
])
def test_csv_lines_no_column_takes_are_named_by_line(db_url, engine, mura, make, expected):
    csv = mura / "MURA-v1.1" / "train_image_paths.csv"
    lines = csv.read_bytes().decode().splitlines()
    number = next(i for i, line in enumerate(lines) if "/image1.png" in line and "/study1_" in line)
    lines[number] = make(lines[number])
    csv.write_bytes("".join(f"{line}\r\n" for line in lines).encode())
    before = snapshot(engine, log=False)
    result = run(["ingest", str(mura)], db_url)
    assert result.exit_code == 1
    [line] = [line for line in error_lines(result) if expected in line]
    assert line.startswith(f"error: MURA-v1.1/train_image_paths.csv:{number + 1}: ")
    assert snapshot(engine, log=False) == before
    assert run(["ingest", str(mura), "--skip-bad"], db_url).exit_code == 0


# -- options -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "expected"), [
    (["--dataset", "d" * 200], "--dataset: a dataset name of 200 characters; bonedb keeps at most 128"),
    (["--dataset", ""], "--dataset: a dataset needs a name"),
    (["--dataset", " spaced "], "leading or trailing spaces"),
])
def test_a_dataset_name_no_column_takes_is_a_usage_error_for_both_ingests(db_url, engine, mura, tmp_path, args,
                                                                          expected):
    root = folder_set(tmp_path / "set")
    before = snapshot(engine)
    for command in (["ingest", str(mura)], ["ingest-folder", str(root)]):
        result = run([*command, *args], db_url)
        assert result.exit_code == 2, result.output
        assert expected in result.stderr and "Invalid value for '--dataset'" in result.stderr
    assert snapshot(engine) == before, "not even the ingest log: a mistyped option is not an ingest"


def test_a_patient_pattern_that_is_no_regular_expression_is_a_usage_error(db_url, engine, tmp_path):
    root = folder_set(tmp_path / "set")
    before = snapshot(engine)
    result = run(["ingest-folder", str(root), "--dataset", "set", "--patient-pattern", "(unclosed"], db_url)
    assert result.exit_code == 2
    assert "Invalid value for '--patient-pattern'" in result.stderr and "missing ), unterminated" in result.stderr
    assert snapshot(engine) == before and ingest_outcomes(engine) == []


def test_ingest_folder_accepts_verify_since_it_always_verifies(db_url, engine, tmp_path):
    result = run(["ingest-folder", str(folder_set(tmp_path / "set")), "--dataset", "set", "--verify"], db_url)
    assert result.exit_code == 0, result.output


# -- a dataset read from another folder -----------------------------------------------------------------------

def test_a_dataset_moved_to_a_tree_lacking_some_images_is_refused(db_url, engine, mura, tmp_path):
    ingest_mura(engine, mura)
    partial = tmp_path / "partial"
    shutil.copytree(mura, partial)
    gone = listed(partial)[:30]
    for path in gone:
        (partial / path).unlink()
    before = snapshot(engine, log=False)
    result = run(["ingest", str(partial)], db_url)
    assert result.exit_code == 1
    [line] = error_lines(result)
    assert f"was read from {mura.resolve()}" in line and "lacks 30 of its" in line
    assert "another --dataset name" in line
    assert snapshot(engine, log=False) == before
    assert ingest_outcomes(engine)[-1] == "refused"

    moved = tmp_path / "moved"  # a whole copy (a moved disk) is fine: the root follows it
    shutil.copytree(mura, moved)
    assert run(["ingest", str(moved)], db_url).exit_code == 0
    with engine.connect() as conn:
        assert conn.execute(select(Dataset.root)).scalar_one() == str(moved.resolve())


# -- a source split that shares files across its subsets ----------------------------------------------------

def test_ingest_folder_counts_identical_files_across_the_sources_subsets(db_url, engine, tmp_path):
    root = folder_set(tmp_path / "set")
    shutil.copy(root / "train" / "normal" / "a0.png", root / "test" / "normal" / "copy-of-a0.png")
    shutil.copy(root / "train" / "fractured" / "a1.png", root / "test" / "fractured" / "copy-of-a1.png")
    shutil.copy(root / "train" / "fractured" / "a1.png", root / "train" / "fractured" / "again-a1.png")
    result = run(["ingest-folder", str(root), "--dataset", "set", "--json"], db_url)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["source_split_identical_files"] == 2 and report["source_split_leaks"] == 0
    text = run(["ingest-folder", str(root), "--dataset", "set2"], db_url).stdout
    assert "warning: 2 files appear identically (same sha256) in several subsets of the source's split" in text


def test_audit_dataset_names_an_unreadable_file_once(db_url, engine, mura):
    ingest_mura(engine, mura, verify=True)
    victim = listed(mura)[0]
    data = (mura / victim).read_bytes()
    (mura / victim).write_bytes(b"\x00" * len(data))  # same size, so not "changed": read, and unreadable
    result = run(["audit", "dataset", "mura-v1.1"], db_url)
    assert result.exit_code == 1
    [line] = [line for line in result.stdout.splitlines() if victim in line]
    assert line.strip() == f"{victim}: not an image format bonedb reads (PNG, JPEG, GIF, BMP or WebP), or a " \
                           "truncated header"
    assert line.count(Path(victim).name) == 1


# -- Pillow's warnings --------------------------------------------------------------------------------------

def test_pillows_warnings_do_not_tear_the_progress_bar(db_url, engine, tmp_path):
    root = folder_set(tmp_path / "set")
    palette = Image.new("P", (32, 32))
    palette.putpalette([v for v in range(256) for _ in range(3)])
    palette.save(root / "train" / "normal" / "palette.png", transparency=bytes([0] * 10 + [255] * 246))
    env = {**os.environ, "BONEDB_DATABASE_URL": db_url, "PYTHONWARNINGS": "always"}
    for args in (["ingest-folder", str(root), "--dataset", "set"], ["audit", "dataset", "set"]):
        done = subprocess.run([bonedb(), *args], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "Warning" not in done.stderr, done.stderr
