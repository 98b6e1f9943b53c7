"""The package's shape: one import name when installed, and layers that only import downwards."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]


def _mirror(tmp_path: Path) -> Path:
    """The package as it installs (cli/ and migrations/ inside boneclf/), built from the checkout."""
    root = tmp_path / "mirror"
    shutil.copytree(CHECKOUT / "boneclf", root / "boneclf", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("cli", "migrations"):
        shutil.copytree(CHECKOUT / folder, root / "boneclf" / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())",
         "--config", str(CHECKOUT / "pyproject.toml"), "--no-cache"],
        cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
    )


def test_layers_import_only_downwards(tmp_path):
    result = _lint_imports(_mirror(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(("module", "forbidden"), [
    ("boneclf/store/schema.py", "from boneclf.data import splits"),  # store must not import data
    ("boneclf/data/stats.py", "from boneclf.ml import metrics"),  # data must not import ml
    ("boneclf/ml/metrics.py", "import boneclf.cli.output"),  # nothing imports the CLI
    ("boneclf/store/runs.py", "from boneclf.ml import run_folder"),  # no circle between runs and their folders
])
def test_a_rule_broken_on_purpose_fails(tmp_path, module, forbidden):
    root = _mirror(tmp_path)
    target = root / module
    target.write_text(target.read_text() + f"\n{forbidden}  # planted by the test\n")
    result = _lint_imports(root)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout


def test_wheel_installs_one_import_name_and_migrates_from_anywhere(tmp_path):
    """Build the wheel, install it alone into a fresh virtual environment, and run `bonedb db upgrade`
    from an unrelated folder: the migrations must come from inside the installed package."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(CHECKOUT)],
                   check=True, capture_output=True, cwd=tmp_path)
    [wheel] = dist.glob("bonedb-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [top_level] = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["boneclf"]
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "bonedb = boneclf.cli.main:main" in archive.read(entry_points).decode()
    assert {name.split("/")[0] for name in names} == {"boneclf", top_level.split("/")[0]}
    assert {"boneclf/py.typed", "boneclf/cli/main.py", "boneclf/migrations/env.py"} <= set(names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(purelib), str(wheel)],
                   check=True, capture_output=True)
    # The dependencies (SQLAlchemy, Alembic, click...) come from this environment, after the venv's own
    # site-packages on sys.path, so the freshly installed boneclf is the one imported.
    ours = [p for p in {*site.getsitepackages(), sysconfig.get_paths()["purelib"]} if Path(p).is_dir()]
    (purelib / "zz_test_dependencies.pth").write_text("\n".join(ours) + "\n")
    # The console script exactly as the entry point above declares it.
    (venv / "bin" / "bonedb").write_text(f"#!{venv / 'bin' / 'python'}\nfrom boneclf.cli.main import main\nmain()\n")
    (venv / "bin" / "bonedb").chmod(0o755)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import boneclf, importlib.resources as r; print(boneclf.__file__); "
                            "print(r.files('boneclf.migrations'))"],
                           cwd=elsewhere, check=True, capture_output=True, text=True).stdout.split()
    assert all(line.startswith(str(purelib)) for line in where), where
    result = subprocess.run([str(venv / "bin" / "bonedb"), "--database-url", f"sqlite:///{elsewhere / 'x.sqlite'}",
                             "db", "upgrade"], cwd=elsewhere, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "upgraded (empty) -> " in result.stdout
