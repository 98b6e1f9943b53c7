"""The command line through click's CliRunner: the whole flow, errors as one line, no passwords shown."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from boneclf.cli.main import cli


def run(args, url=None, **kwargs):
    runner = CliRunner()
    prefix = ["--database-url", url] if url else []
    return runner.invoke(cli, prefix + list(args), catch_exceptions=False, **kwargs)


def test_full_flow(db_url, tmp_path):
    out = tmp_path / "data"
    result = run(["synth", str(out), "--patients", "20", "--size", "40", "--json"])
    assert result.exit_code == 0, result.output
    made = json.loads(result.output)
    assert made["images"] > 20 and made["multi_part_patients"] >= 1

    result = run(["stats"], db_url)
    assert result.exit_code == 1
    assert "run `bonedb db upgrade`" in result.stderr and len(result.stderr.strip().splitlines()) == 1

    assert run(["db", "upgrade"], db_url).exit_code == 0
    current = json.loads(run(["db", "current", "--json"], db_url).output)
    assert current["at_head"] is True

    result = run(["ingest", str(out), "--json"], db_url)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["images_added"] == made["images"] and report["changed"]

    result = run(["ingest", str(out)], db_url)
    assert result.exit_code == 0
    assert "nothing to do" in result.output

    stats = json.loads(run(["stats", "--json"], db_url).output)
    assert stats["totals"][0]["images"] == made["images"]
    assert stats["totals"][0]["patients"] == made["patients"]
    assert stats["synthetic"] == ["mura-v1.1"]
    table = run(["stats"], db_url).output.splitlines()
    assert table[0].split() == ["dataset", "part", "split", "label", "images", "studies", "patients"]
    assert table[-1].startswith("mura-v1.1 is synthetic (drawn by `bonedb synth`)"), "drawn data never passes for real"


def test_bad_input_is_one_line_per_problem_and_exit_1(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    out = tmp_path / "data"
    run(["synth", str(out), "--patients", "6", "--size", "40"])
    run(["db", "upgrade"], url)
    paths = out / "MURA-v1.1" / "train_image_paths.csv"
    paths.write_bytes(b"MURA-v1.1/train/XR_KNEE/patient00001/study1_positive/image1.png\r\n" + paths.read_bytes())
    result = run(["ingest", str(out)], url)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: MURA-v1.1/train_image_paths.csv:1: unknown body part XR_KNEE")
    assert lines[-1].endswith("nothing was written")
    assert "Traceback" not in result.output


def test_unknown_part_option(tmp_path):
    result = run(["synth", str(tmp_path / "x"), "--parts", "knee"])
    assert result.exit_code == 2  # a bad option value is a usage error, as click reports every other one
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: Invalid value for '--parts': unknown body part 'knee': choose from elbow, finger, forearm, hand, "
        "humerus, shoulder, wrist (or unknown, a folder dataset ingested without --part)")


@pytest.mark.parametrize("port", ["3306", "1"])
def test_password_never_shown(port, tmp_path):
    secret = "s3cr3t-Pa55word"
    url = f"mysql+pymysql://root:{secret}@127.0.0.1:{port}/bonedb_nonexistent"
    for args in (["db", "current"], ["db", "upgrade"], ["stats"]):
        result = run(args, url)
        assert result.exit_code == 1
        assert secret not in result.output
        assert "***" in result.stderr and result.stderr.startswith("error: database mysql+pymysql://root:***@")


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, prefix + (name,))
        else:
            yield prefix + (name,), command


def test_every_command_documents_itself_with_an_example():
    for path, _command in _commands(cli):
        result = run(list(path) + ["--help"])
        assert result.exit_code == 0
        assert "Example" in result.output, f"bonedb {' '.join(path)} --help has no example"


def test_every_command_is_registered():
    assert set(cli.commands) == {
        "audit", "db", "demo", "duplicates", "evaluate", "export", "history", "ingest", "ingest-dicom", "ingest-folder", "labels",
        "log", "predict", "report", "runs", "serve", "split", "stats", "synth", "train", "tune", "weights",
    }
