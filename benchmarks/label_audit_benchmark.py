"""Label audit on real radiographs: does `bonedb labels suspects` find planted label flips, and does it
stay at chance when the labels carry no signal?

Takes a Kaggle-style class-folder set (ROOT/<subset>/<label>/*, e.g. the fracture set; never committed to
the project) and:

1. ingests all of it once (`ingest-folder`'s code path) into a SQLite database, which finds its duplicate
   groups; or reuses one so prepared (--full-db). The set is full of rotated copies of one picture, so it is
   deduplicated: one file per connected component of the duplicate groups (the first path), plus every file
   in no group. A component whose files carry both labels is left out (counted).
2. for each seed, "planted": flips the label of --flip (5 %) of the kept files at random, by linking each
   file into a scratch tree under its class folder or under the other one; "control": first permutes every
   label at random (the classes keep their sizes, the labels lose their signal), then flips the same way.
3. ingests the tree (`ingest-folder`) into a copy of the full database (whose verdicts on candidate pairs
   spare it from verifying them again) and runs the library's `audit_labels`
   with the recipe (the options of `bonedb labels suspects`).
4. from the same stored out-of-fold probabilities, ranks the studies twice: cleanlab's raw self-confidence
   (called here directly, `adjust_pred_probs=False`) and the library's `rank_labels` (class-adjusted), and
   scores each ranking on the flips: recall in the top 10 % and 20 %, precision at k (k = the number of
   flips) and in the top 10 %, each with chance and its 95 % range (hypergeometric: k flips among n studies,
   the top m drawn at random).

Nothing under ROOT is written: scratch trees hold hard links (copies across file systems).

    python benchmarks/label_audit_benchmark.py /work/data/kaggle-fracture --scratch /work/scratch/labelbench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select  # noqa: E402

from boneclf.data.folder_dataset import DEFAULT_LABELS, ingest_folder  # noqa: E402
from boneclf.ml.label_audit import audit_labels  # noqa: E402
from boneclf.ml.label_ranking import MIN_SEPARATION, rank_labels, separation  # noqa: E402
from boneclf.ml.train_config import TrainConfig  # noqa: E402
from boneclf.store import migrate  # noqa: E402
from boneclf.store.duplicates import group_memberships  # noqa: E402
from boneclf.store.engine import make_engine  # noqa: E402
from boneclf.store.queries import dataset_id_of  # noqa: E402
from boneclf.store.schema import Dataset, Image, Study  # noqa: E402

FOLDER = {0: "not fractured", 1: "fractured"}


@dataclass
class Kept:
    source: Path  # the file under ROOT
    label: int  # as the source's folder says


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def engine_for(path: Path):
    engine = make_engine(f"sqlite:///{path}", create=True)
    migrate.upgrade(engine)
    return engine


def deduplicated(root: Path, full_db: Path, dataset: str) -> tuple[list[Kept], dict]:
    """One file per connected component of DATASET's duplicate groups, plus every file in none (ingesting
    ROOT into FULL_DB first when it holds no DATASET)."""
    engine = engine_for(full_db)
    facts: dict = {}
    with engine.connect() as conn:
        known = conn.execute(select(Dataset.id).where(Dataset.name == dataset)).first() is not None
    if not known:
        start = time.perf_counter()
        report = ingest_folder(engine, root, dataset=dataset)
        facts["full ingest"] = f"{report.images} images, {time.perf_counter() - start:.0f} s (load {load()})"
    with engine.connect() as conn:
        dataset_id = dataset_id_of(conn, dataset)
        rows = conn.execute(select(Image.id, Image.path, Study.label).join(Study, Study.id == Image.study_id)
                            .where(Image.dataset_id == dataset_id)).all()
        groups = group_memberships(conn, dataset_id)
    engine.dispose()
    parent = {row.id: row.id for row in rows}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for members in groups.values():
        for other in members[1:]:
            parent[find(other)] = find(members[0])
    components: dict[int, list] = defaultdict(list)
    for row in rows:
        components[find(row.id)].append(row)
    kept, mixed = [], 0
    for members in components.values():
        if len({m.label for m in members}) > 1:
            mixed += 1  # which label is right is unknown: neither copy can serve as ground truth
            continue
        first = min(members, key=lambda m: m.path)
        kept.append(Kept(root / first.path, int(first.label)))
    kept.sort(key=lambda k: str(k.source))
    facts.update({"images": len(rows), "duplicate groups": len(groups),
                  "components with several files": sum(len(m) > 1 for m in components.values()),
                  "mixed-label components left out": mixed, "kept": len(kept),
                  "kept fractured": sum(k.label for k in kept)})
    return kept, facts


def plant(kept: list[Kept], labels: np.ndarray, tree: Path) -> None:
    """TREE/<class>/<index>_<name> for each kept file, under the class LABELS gives it."""
    if tree.exists():
        shutil.rmtree(tree)
    for name in FOLDER.values():
        (tree / name).mkdir(parents=True)
    for index, (item, label) in enumerate(zip(kept, labels)):
        target = tree / FOLDER[int(label)] / f"{index:05d}_{item.source.name}"
        try:
            os.link(item.source, target)
        except OSError:  # another file system
            shutil.copyfile(item.source, target)


def hypergeom_range(n: int, k: int, m: int) -> tuple[int, int]:
    """2.5 % and 97.5 % points of the flips found among M studies drawn at random from N holding K flips."""
    from scipy.stats import hypergeom

    low, high = hypergeom.ppf([0.025, 0.975], n, k, m)
    return int(low), int(high)


def pooled_chance(n: int, k: int, m: int, seeds: int) -> tuple[int, int, np.ndarray]:
    """The 95 % range of the flips found in the top M summed over SEEDS independent random rankings, and the
    distribution of that sum (for a one-sided p-value)."""
    from scipy.stats import hypergeom

    one = hypergeom.pmf(np.arange(k + 1), n, k, m)
    total = np.ones(1)
    for _ in range(seeds):
        total = np.convolve(total, one)
    cumulative = np.cumsum(total)
    return int(np.searchsorted(cumulative, 0.025)), int(np.searchsorted(cumulative, 0.975)), total


def order_of(scores: np.ndarray) -> np.ndarray:
    """Most suspicious first; ties broken by input order, as the library does."""
    return np.lexsort((np.arange(len(scores)), scores))


def score_ranking(order: np.ndarray, flipped: np.ndarray, top10: int, top20: int) -> dict:
    k = int(flipped.sum())
    hits = {m: int(flipped[order[:m]].sum()) for m in (top10, top20, k)}
    return {"recall10": hits[top10] / k, "hits10": hits[top10], "recall20": hits[top20] / k, "hits20": hits[top20],
            "precision_k": hits[k] / k, "hits_k": hits[k], "precision10": hits[top10] / top10}


def run_one(args, kept: list[Kept], variant: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    truth = np.array([k.label for k in kept])
    if variant == "control":
        truth = rng.permutation(truth)
    n = len(kept)
    k = round(args.flip * n)
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.choice(n, size=k, replace=False)] = True
    planted = np.where(flipped, 1 - truth, truth)
    name = f"{variant}-{seed}"
    tree = args.scratch / "trees" / name
    plant(kept, planted, tree)
    db = args.scratch / f"{name}.sqlite"
    db.unlink(missing_ok=True)
    runs_dir = args.scratch / "runs" / name
    shutil.rmtree(runs_dir, ignore_errors=True)
    # A copy of the full set's database: its stored verdicts on candidate pairs (keyed by content) spare the
    # ingest from verifying the same pairs on the pixels again. The audit reads only the new dataset.
    shutil.copyfile(args.full_db, db)
    engine = engine_for(db)
    load_before = load()
    start = time.perf_counter()
    ingest_folder(engine, tree, dataset=f"kaggle-{name}")
    ingested = time.perf_counter() - start
    config = TrainConfig(stage="fracture", split="", arch=args.arch, weights=args.weights,
                         image_size=args.image_size, epochs=args.epochs, augment=args.augment, seed=args.seed,
                         runs_dir=str(runs_dir), tensorboard=False)
    start = time.perf_counter()
    result = audit_labels(engine, f"kaggle-{name}", config, folds=args.folds, verbose=0)
    audited = time.perf_counter() - start
    # Which file each scored study is: its image's name starts with the kept index.
    with engine.connect() as conn:
        path_of = dict(conn.execute(select(Image.study_id, Image.path)).all())
    engine.dispose()
    rows = sorted(result.suspects, key=lambda r: r.study_id)
    index = np.array([int(Path(path_of[r.study_id]).name.split("_", 1)[0]) for r in rows])
    labels = np.array([r.label for r in rows])
    probabilities = np.array([r.probability for r in rows])
    assert (labels == planted[index]).all(), "the audit scored the labels planted"
    hit = flipped[index]
    m10, m20 = round(0.1 * len(rows)), round(0.2 * len(rows))

    from cleanlab.rank import get_label_quality_scores

    p = np.clip(probabilities, 1e-6, 1 - 1e-6)
    raw = get_label_quality_scores(labels, np.column_stack([1 - p, p]), method="self_confidence",
                                   adjust_pred_probs=False)
    ranking = rank_labels(labels, probabilities)
    stored = {r.study_id: r.rank for r in result.suspects}
    assert all(stored[r.study_id] == rank for r, rank in zip(rows, ranking.ranks)), "rank_labels is what was stored"
    flagged = ranking.flagged
    return {
        "variant": variant, "seed": seed, "n": len(rows), "k": int(hit.sum()), "m10": m10, "m20": m20,
        "fractured": int(labels.sum()),
        "raw": score_ranking(order_of(np.asarray(raw)), hit, m10, m20),
        "adjusted": score_ranking(order_of(ranking.scores), hit, m10, m20),
        "flagged": int(flagged.sum()), "flagged_flips": int((flagged & hit).sum()),
        "auroc": float(separation(labels, probabilities)),
        # Against the labels before flipping: how much the models learned of what the set says.
        "auroc_truth": float(separation(truth[index], probabilities)),
        "ingest_s": ingested, "audit_s": audited, "load": f"{load_before} -> {load()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the class-folder set, e.g. /work/data/kaggle-fracture")
    parser.add_argument("--scratch", type=Path, required=True, help="where trees, databases and runs go")
    parser.add_argument("--full-db", type=Path,
                        help="a SQLite database holding ROOT ingested as --dataset (default: <scratch>/full.sqlite, "
                             "ingested when empty: about 6 min for the Kaggle set)")
    parser.add_argument("--dataset", default="kaggle", help="ROOT's dataset name in --full-db")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--variants", default="planted,control")
    parser.add_argument("--flip", type=float, default=0.05, help="share of studies whose label is flipped")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--augment", default="flip")
    parser.add_argument("--seed", type=int, default=42, help="the audit's seed (folds, weights, shuffling)")
    parser.add_argument("--reuse", action="store_true",
                        help="take a variant and seed's figures from <scratch>/<variant>-<seed>.json when an earlier "
                             "run left them (same options: not checked)")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: print the tables from the figures saved by earlier runs (those missing "
                             "are left out), e.g. after running variants and seeds one invocation each")
    args = parser.parse_args()
    args.root = args.root.resolve()
    args.scratch = args.scratch.resolve()
    if args.scratch.is_relative_to(args.root) or args.root.is_relative_to(args.scratch):
        parser.error("--scratch and ROOT must not contain one another: ROOT is only read")
    args.scratch.mkdir(parents=True, exist_ok=True)
    unknown = {name for name in FOLDER.values() if name not in DEFAULT_LABELS}
    assert not unknown, unknown

    import cleanlab

    from boneclf.ml.tf_env import tensorflow

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
          f"python {platform.python_version()}, tensorflow {tensorflow().__version__}, cleanlab {cleanlab.__version__}"
          f"; load (1/5/15 min) {load()}; {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"recipe: --folds {args.folds} --arch {args.arch} --weights {args.weights} --image-size {args.image_size} "
          f"--epochs {args.epochs} --augment {args.augment} --seed {args.seed}; flips {args.flip:.0%}")
    args.full_db = (args.full_db or args.scratch / "full.sqlite").resolve()
    kept, facts = deduplicated(args.root, args.full_db, args.dataset)
    print("deduplicated: " + "; ".join(f"{key} {value}" for key, value in facts.items()))

    results = []
    for variant in args.variants.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            saved = args.scratch / f"{variant}-{seed}.json"
            if (args.reuse or args.report) and saved.exists():
                found = json.loads(saved.read_text())
            elif args.report:
                continue
            else:
                found = run_one(args, kept, variant, seed)
                saved.write_text(json.dumps(found, indent=1))
            results.append(found)
            print(f"{variant} seed {seed}: ingest {found['ingest_s']:.0f} s, audit {found['audit_s']:.0f} s, "
                  f"AUROC {found['auroc']:.2f} (load {found['load']})", flush=True)

    first = results[0]
    n, k, m10, m20 = first["n"], first["k"], first["m10"], first["m20"]
    ranges = {m: hypergeom_range(n, k, m) for m in (m10, m20, k)}
    print(f"\n{n} studies, k = {k} flips, top 10 % = {m10}, top 20 % = {m20}. Chance and its 95 % range (flips found "
          "by a random ranking):")
    print(f"  recall in top 10 %: {m10 / n:.2f}, {ranges[m10][0]}..{ranges[m10][1]} flips "
          f"= {ranges[m10][0] / k:.2f}..{ranges[m10][1] / k:.2f}")
    print(f"  recall in top 20 %: {m20 / n:.2f}, {ranges[m20][0]}..{ranges[m20][1]} flips "
          f"= {ranges[m20][0] / k:.2f}..{ranges[m20][1] / k:.2f}")
    print(f"  precision at k: {k / n:.3f}, {ranges[k][0]}..{ranges[k][1]} flips = "
          f"{ranges[k][0] / k:.2f}..{ranges[k][1] / k:.2f}")
    print(f"  precision in top 10 %: {k / n:.3f}, {ranges[m10][0] / m10:.2f}..{ranges[m10][1] / m10:.2f}")
    # Mann-Whitney under the null: the AUROC of probabilities that carry nothing about the labels.
    positives = first["fractured"]
    spread = ((n + 1) / (12 * positives * (n - positives))) ** 0.5
    print(f"  out-of-fold AUROC of models that learned nothing: 0.50, 95 % range {0.5 - 1.96 * spread:.2f}.."
          f"{0.5 + 1.96 * spread:.2f} ({positives} of {n} labelled fractured)")
    print()
    print("| variant (seed) | ranking | recall in top 10 % | recall in top 20 % | precision at k | "
          "precision in top 10 % | flagged (of them flips) | AUROC (vs. unflipped) | audit wall time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for found in results:
        for ranking in ("raw", "adjusted"):
            s = found[ranking]
            how = "raw self-confidence" if ranking == "raw" else "class-adjusted"
            print(f"| {found['variant']} ({found['seed']}) | {how} "
                  f"| {s['recall10']:.2f} ({s['hits10']}) | {s['recall20']:.2f} ({s['hits20']}) "
                  f"| {s['precision_k']:.2f} ({s['hits_k']}) | {s['precision10']:.2f} "
                  f"| {found['flagged']} ({found['flagged_flips']}) "
                  f"| {found['auroc']:.2f} ({found['auroc_truth']:.2f}) "
                  f"| {found['audit_s'] / 60:.1f} min |")
    print(f"\nAUROC: out of fold, against the labels scored (the library's `separation`; its caution below "
          f"{MIN_SEPARATION}); in brackets against the labels before flipping. `flagged` is cleanlab's "
          "find_label_issues, the same for both rankings.")
    for variant in dict.fromkeys(r["variant"] for r in results):
        mine = [r for r in results if r["variant"] == variant]
        low, high, total = pooled_chance(n, k, m10, len(mine))
        for ranking in ("raw", "adjusted"):
            values = [r[ranking]["recall10"] for r in mine]
            hits = sum(r[ranking]["hits10"] for r in mine)
            print(f"{variant}, {ranking}: recall in top 10 % {min(values):.2f}..{max(values):.2f} "
                  f"= {min(values) / (m10 / n):.1f}..{max(values) / (m10 / n):.1f} x chance; over the "
                  f"{len(mine)} seeds {hits} of {k * len(mine)} flips in the top 10 % "
                  f"(chance {k * len(mine) * m10 / n:.1f}, "
                  f"95 % range {low}..{high}, P(>= {hits}) = {total[hits:].sum():.3g})")


if __name__ == "__main__":
    main()
