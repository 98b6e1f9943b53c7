"""Trees bonedb writes (export, synth) appear whole or not at all: a full disk leaves nothing behind and says
where; partial trees of runs killed with -9 are cleared by the next run, which says so; names made safe
for file systems never collide."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from boneclf.cli.main import cli
from boneclf.data.export import export_split
from boneclf.data.folder_dataset import ingest_folder
from boneclf.data.splits import SplitOptions, create_split

from conftest import synth_sqlite
from hostile import small_png


def run(args, url):
    return CliRunner().invoke(cli, ["--database-url", url, *args], catch_exceptions=False)


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped): no process runs under it now."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.fixture
def small(tmp_path):
    engine = synth_sqlite(tmp_path, 12, 32)
    yield engine, tmp_path, f"sqlite:///{tmp_path / 'bonedb.sqlite'}"
    engine.dispose()


def test_the_next_export_clears_partial_trees_of_dead_runs_and_says_so(small, tmp_path):
    _engine, _folder, url = small
    exports = tmp_path / "exports"
    exports.mkdir()
    stale = exports / f".ex.bonedb-partial-{dead_pid()}"
    (stale / "humerus" / "train").mkdir(parents=True)
    (stale / "humerus" / "train" / "half.png").write_bytes(b"half")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live = exports / f".ex.bonedb-partial-{sleeper.pid}"  # another export, still running: kept
        live.mkdir()
        unrelated = exports / ".other.bonedb-partial-1"  # another OUT's: not ours to judge
        unrelated.mkdir()
        result = run(["export", "s", str(exports / "ex")], url)
        assert result.exit_code == 0, result.output
        notes = [line for line in result.stdout.splitlines() if line.startswith("note: removed")]
        assert len(notes) == 1 and str(stale) in notes[0] and "interrupted" in notes[0]
        assert not stale.exists() and live.exists() and unrelated.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_previous_export_set_aside_by_a_killed_swap_is_put_back(small, tmp_path):
    engine, _folder, url = small
    exports = tmp_path / "exports"
    export_split(engine, "s", exports / "ex")
    before = listing(exports / "ex")
    (exports / "ex").rename(exports / f".ex.bonedb-old-{dead_pid()}")  # killed between the swap's two renames
    result = run(["export", "s", str(exports / "ex")], url)
    [line] = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and "holds a previous bonedb export: pass --force" in line
    assert f"(first, restored {exports / 'ex'} from .ex.bonedb-old-" in line
    assert listing(exports) == ["ex", *[f"ex/{p}" for p in before]]


def test_names_made_safe_never_collide_and_stay_the_same(db_url, engine, tmp_path):
    root = tmp_path / "set"
    for name, shade in (("a b_1.png", 10), ("a_b_1.png", 200), ("a+b_1.png", 90), ("c_1.png", 120)):
        small_png(root / "normal" / name, shade=shade)
        small_png(root / "fractured" / name.replace("_1", "_2"), shade=shade + 20)
    ingest_folder(engine, root, dataset="set", patient_pattern=r"^(.+)_\d")
    create_split(engine, "s", SplitOptions("set", (), test_from="carve", val=0.25, test=0.25, seed=1,
                                           allow_leaks=True))
    out = tmp_path / "ex"
    report = export_split(engine, "s", out)
    assert report.images == 8
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len({row["exported_path"] for row in rows}) == 8
    assert all((out / row["exported_path"]).is_file() for row in rows)
    # A folder set's files are named after their source paths, and "a b_1", "a_b_1" and "a+b_1" all become
    # a_b_1: where two land in one folder, both are tagged with a hash of their own source path.
    tagged = [row for row in rows if re.search(r"-[0-9a-f]{8}$", Path(row["exported_path"]).stem)]
    assert tagged and all(re.search(r"_a_b_[12]-", row["exported_path"]) for row in tagged)
    assert not any("c_" in Path(row["exported_path"]).name for row in tagged)
    again = tmp_path / "again"
    export_split(engine, "s", again)
    assert (again / "manifest.csv").read_bytes() == (out / "manifest.csv").read_bytes()


def test_synth_over_another_folder_is_refused_and_over_its_own_replaces_it(tmp_path):
    other = tmp_path / "real" / "MURA-v1.1"
    other.mkdir(parents=True)
    (other / "train_image_paths.csv").write_text("a real download\n")
    result = CliRunner().invoke(cli, ["synth", str(tmp_path / "real"), "--patients", "4", "--size", "32"])
    assert result.exit_code == 1 and "was not written by bonedb synth" in result.stderr
    assert (other / "train_image_paths.csv").read_text() == "a real download\n"
    for seed in ("1", "2"):
        result = CliRunner().invoke(cli, ["synth", str(tmp_path / "demo"), "--patients", "4", "--size", "32",
                                          "--seed", seed])
        assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "demo").iterdir()] == ["MURA-v1.1"]


# -- a full disk, for real: a 1 MB tmpfs in a mount namespace of the test's own ------------------------

def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                           "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return done.returncode == 0


needs_tmpfs = pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs in a user namespace here")


def on_full_disk(disk: Path, command: str, size: str = "1m") -> subprocess.CompletedProcess:
    """Run COMMAND (a shell line) with a tmpfs of SIZE mounted at DISK; it prints its files afterwards."""
    bonedb = shutil.which("bonedb", path=str(Path(sys.executable).parent))
    disk.mkdir(exist_ok=True)
    script = (f"mount -t tmpfs -o size={size} tmpfs {disk} && {command.replace('bonedb', bonedb, 1)}; "
              f"echo rc=$?; echo left:; ls -A {disk}")
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=600)


@needs_tmpfs
def test_synth_on_a_full_disk_leaves_nothing_and_names_the_folder(tmp_path):
    disk = tmp_path / "disk"
    done = on_full_disk(disk, f"bonedb synth {disk}/demo --patients 300 --size 128")
    assert "rc=1" in done.stdout, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {disk}/demo/MURA-v1.1: No space left on device")
    assert "nothing was written" in line
    assert done.stdout.split("left:")[1].split() == ["demo"], "an empty OUT, no partial tree"


@needs_tmpfs
def test_export_on_a_full_disk_leaves_nothing_and_names_the_folder(small, tmp_path):
    _engine, _folder, url = small
    disk = tmp_path / "disk"
    done = on_full_disk(disk, f"bonedb --database-url {url} export s {disk}/ex --link copy", size="64k")
    assert "rc=1" in done.stdout, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {disk}/ex: No space left on device") and "nothing was written" in line
    assert done.stdout.split("left:")[1].split() == []
