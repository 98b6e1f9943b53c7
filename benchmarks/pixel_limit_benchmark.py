"""A decompression bomb against `bonedb predict` and `bonedb serve`: time and peak memory of the refusal,
against the same commands on an ordinary image (the baseline: what TensorFlow and the model cost anyway).

The bomb is a valid 194 KB PNG of 20,000 x 10,000 gray pixels (200 MB decoded; before the pixel limit
`predict` took 47 s and 14.0 GB on it). The model is a MobileNetV2 stage-2 run at 224 px (random
weights, recorded as finished: the cost is the same as a trained one's), of one part, so `predict`
needs no stage 1. Each `predict` is its own process under /usr/bin/time -v (peak RSS, wall time);
the server is one process, whose peak RSS (VmHWM) is read after each request.

    python benchmarks/pixel_limit_benchmark.py
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sqlalchemy import select  # noqa: E402

from boneclf.data.ingest import ingest_mura  # noqa: E402
from boneclf.data.splits import SplitOptions, create_split  # noqa: E402
from boneclf.data.synth import synth_mura  # noqa: E402
from boneclf.errors import BonedbError  # noqa: E402
from boneclf.ml.backbones import get_backbone  # noqa: E402
from boneclf.ml.image_spec import spec_for  # noqa: E402
from boneclf.ml.models import build_classifier  # noqa: E402
from boneclf.ml.tf_env import tensorflow  # noqa: E402
from boneclf.store import migrate  # noqa: E402
from boneclf.store.engine import make_engine  # noqa: E402
from boneclf.store.queries import get_split  # noqa: E402
from boneclf.store.runs import create_run, set_status  # noqa: E402
from boneclf.store.schema import Image  # noqa: E402

from hostile import png_real_bomb  # noqa: E402

PART = "humerus"
PORT = 8799


def stage2_run(engine, runs_dir: Path) -> int:
    with engine.connect() as conn:
        split = get_split(conn, "bench")
    parameters = {"stage": "fracture", "split": "bench", "parts": [PART], "arch": "mobilenetv2", "weights": "none",
                  "image_size": 224}
    run_id = create_run(engine, stage="fracture", parts=(PART,), architecture="mobilenetv2", parameters=parameters,
                        image_spec=spec_for("mobilenetv2", 224).to_dict(), split=split,
                        label_version=split.label_version, tf_version=tensorflow().__version__, runs_dir=str(runs_dir))
    (runs_dir / str(run_id)).mkdir(parents=True)
    build_classifier(get_backbone("mobilenetv2"), 224, 1, weights=None).save(runs_dir / str(run_id) / "model.keras")
    (runs_dir / str(run_id) / "class_names.json").write_text(json.dumps(["normal", "abnormal"]))
    set_status(engine, run_id, "finished", metrics={})
    return run_id


def timed_predict(url: str, run_id: int, image: Path) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS in MB, exit status, last stderr line) of `bonedb predict IMAGE`."""
    bonedb = shutil.which("bonedb", path=str(Path(sys.executable).parent)) or "bonedb"
    done = subprocess.run(["/usr/bin/time", "-v", bonedb, "--database-url", url, "predict", str(image),
                           "--fracture-run", str(run_id)], capture_output=True, text=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    seconds = int(wall[1] or 0) * 3600 + int(wall[2]) * 60 + float(wall[3])
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1]) / 1024
    said = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    return seconds, rss, done.returncode, said[0] if said else "(no error)"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hwm_mb(pid: int) -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1]) / 1024


def timed_get(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=600) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return time.perf_counter() - started, status


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        url = f"sqlite:///{tmp / 'bench.sqlite'}"
        engine = make_engine(url, create=True)
        migrate.upgrade(engine)
        synth_mura(tmp / "data", patients=12, parts=(PART,), size=512, seed=0)
        ingest_mura(engine, tmp / "data")
        create_split(engine, "bench", SplitOptions("mura-v1.1", (PART,), test_from="carve"))
        run_id = stage2_run(engine, tmp / "runs")
        with engine.connect() as conn:
            (ordinary_id, ordinary), (bomb_id, bomb) = conn.execute(
                select(Image.id, Image.path).order_by(Image.id).limit(2)).all()
        ordinary, bomb = tmp / "data" / ordinary, tmp / "data" / bomb
        png_real_bomb(bomb)  # the second image of the dataset becomes the bomb
        engine.dispose()

        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
              f"python {platform.python_version()}, tensorflow {tensorflow().__version__}")
        print(f"bomb: {bomb.stat().st_size:,} bytes, 20000 x 10000 pixels; ordinary: a 512 px synth PNG")
        print("\nbonedb predict IMAGE --fracture-run N (one process each; MobileNetV2 at 224 px):")
        base = timed_predict(url, run_id, ordinary)
        refused = timed_predict(url, run_id, bomb)
        for name, (seconds, rss, code, said) in (("ordinary (baseline)", base), ("bomb", refused)):
            print(f"  {name:20s} exit {code}  {seconds:6.2f} s  peak RSS {rss:7.1f} MB  {said[:90]}")
        print(f"  bomb / baseline: {refused[0] / base[0]:.2f}x the time, {refused[1] / base[1]:.2f}x the memory")

        spec = spec_for("mobilenetv2", 224)
        spec.load(ordinary.read_bytes())  # TensorFlow loaded and warm in this process
        before, started = rss_mb(), time.perf_counter()
        try:
            spec.load(bomb.read_bytes())
        except BonedbError as exc:
            took = (time.perf_counter() - started) * 1000
            print(f"\nthe refusal itself (ImageSpec.load in this process): {took:.1f} ms, peak RSS "
                  f"+{rss_mb() - before:.1f} MB: {str(exc)[:70]}")

        env = {**os.environ, "BONEDB_DATABASE_URL": url}
        bonedb = shutil.which("bonedb", path=str(Path(sys.executable).parent)) or "bonedb"
        server = subprocess.Popen([bonedb, "serve", "--port", str(PORT), "--cache-dir", str(tmp / "cache")],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            root = f"http://127.0.0.1:{PORT}"
            for _ in range(120):
                try:
                    urllib.request.urlopen(root + "/api/datasets", timeout=5).read()
                    break
                except OSError:
                    time.sleep(0.5)
            print("\nbonedb serve (one process; Grad-CAM loads the model on its first request):")
            for name, path in (("thumbnail, ordinary", f"/images/{ordinary_id}/thumbnail"),
                               ("thumbnail, bomb", f"/images/{bomb_id}/thumbnail"),
                               ("Grad-CAM, ordinary", f"/runs/{run_id}/gradcam/{ordinary_id}.png"),
                               ("Grad-CAM, bomb", f"/runs/{run_id}/gradcam/{bomb_id}.png")):
                seconds, status = timed_get(root + path)
                print(f"  {name:20s} HTTP {status}  {seconds:6.2f} s  server peak RSS so far "
                      f"{hwm_mb(server.pid):7.1f} MB")
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
