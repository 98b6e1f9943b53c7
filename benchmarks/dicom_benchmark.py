"""DICOM ingest speed, in files per second per core, against PNG ingest of the same pictures.

Draws N synthetic radiographs (boneclf.data.radiograph) at SIZE x SIZE, then writes them, in one process:

  - as 8-bit PNGs in class folders, ingested by `ingest-folder` (reads, hashes, groups every image): the baseline;
  - as 12-bit CR DICOM files, uncompressed, RLE and JPEG 2000 lossless, each ingested by `ingest-dicom`
    (reads, decodes, windows, writes a PNG, hashes, groups).

Each ingest runs into a fresh SQLite database. "Per core" is files per CPU-second of this process (all
its threads), so the figure does not depend on how many cores the machine lends it; wall time is shown too.

    python benchmarks/dicom_benchmark.py --images 100 --size 1024
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boneclf.data.dicom_identity import PseudonymKey  # noqa: E402
from boneclf.data.dicom_ingest import ingest_dicom  # noqa: E402
from boneclf.data.folder_dataset import ingest_folder  # noqa: E402
from boneclf.data.radiograph import draw_radiograph  # noqa: E402
from boneclf.store import migrate  # noqa: E402
from boneclf.store.engine import make_engine  # noqa: E402

SYNTAXES = {"uncompressed": None, "RLE": RLELossless, "JPEG 2000 lossless": JPEG2000Lossless}


def pictures(count: int, size: int) -> list[np.ndarray]:
    parts = ["elbow", "finger", "forearm", "hand", "humerus", "shoulder", "wrist"]
    return [np.asarray(draw_radiograph(parts[n % 7], n % 2 == 1, size, size, random.Random(n))[0])
            for n in range(count)]


def write_pngs(folder: Path, grey: list[np.ndarray]) -> None:
    from PIL import Image

    for n, picture in enumerate(grey):
        target = folder / ("abnormal" if n % 2 else "normal") / f"{n:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(target, format="PNG")


def write_dicoms(folder: Path, grey: list[np.ndarray], syntax) -> None:
    folder.mkdir(parents=True)
    for n, picture in enumerate(grey):
        values = (picture.astype(np.uint16) * 16 + 8).astype(np.uint16)  # 12 bits
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1")  # CR Image Storage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = f"P{n // 3}", generate_uid(), generate_uid()
        ds.Modality, ds.BodyPartExamined = "CR", "HAND"
        ds.Rows, ds.Columns = values.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = 2048.0, 4096.0
        ds.PixelData = values.tobytes()
        if syntax is not None:
            ds.compress(syntax, values, generate_instance_uid=False)
        ds.save_as(folder / f"IM{n:05d}", enforce_file_format=True)


def timed(work) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def fresh_engine(folder: Path):
    engine = make_engine(f"sqlite:///{folder / 'bonedb.sqlite'}", create=True)
    migrate.upgrade(engine)
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    grey = pictures(args.images, args.size)
    key = PseudonymKey(os.urandom(32), "benchmark")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_pngs(work / "png", grey)
        engine = fresh_engine(work / "png")
        wall, cpu = timed(lambda: ingest_folder(engine, work / "png", dataset="png"))
        rows.append(("PNG, ingest-folder (baseline)", wall, cpu, folder_bytes(work / "png")))
        for name, syntax in SYNTAXES.items():
            folder = work / name.replace(" ", "-")
            write_dicoms(folder / "src", grey, syntax)
            engine = fresh_engine(folder)
            source, images = folder / "src", folder / "images"
            wall, cpu = timed(lambda: ingest_dicom(engine, source, dataset="d", key=key,  # noqa: B023
                                                   images_dir=images))  # noqa: B023
            rows.append((f"DICOM {name}, ingest-dicom", wall, cpu, folder_bytes(source)))
    base = args.images / rows[0][2]
    print(f"{args.images} images of {args.size} x {args.size}; {platform.node()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(f"{'ingest':40} {'wall s':>8} {'CPU s':>8} {'files/s/core':>13} {'vs PNG':>7} {'MB read':>8}")
    for name, wall, cpu, size in rows:
        rate = args.images / cpu
        print(f"{name:40} {wall:8.2f} {cpu:8.2f} {rate:13.1f} {rate / base:7.2f} {size / 1e6:8.1f}")
    print(json.dumps({name: {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                             "files_per_cpu_s": round(args.images / cpu, 1)} for name, wall, cpu, _ in rows}))


if __name__ == "__main__":
    main()
