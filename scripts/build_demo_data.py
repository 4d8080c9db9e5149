"""Build the embedded demo data: a stratified, seeded subset of Fashion-MNIST.

Takes 600 train and 100 test images per class from the real Fashion-MNIST IDX files and writes
them, in the same gzipped IDX format, to ``src/mwt/data/demo/``.  Deterministic: the same source
files and seed always give byte-identical output.

    python scripts/build_demo_data.py [--source /usr/share/datasets/fashion-mnist] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mwt.data.readers import read_idx, write_idx  # noqa: E402

SPLITS = {"train": ("train", 600), "test": ("t10k", 100)}


def stratified(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` indices of each class, drawn without replacement, in source order."""
    picks = []
    for c in np.unique(labels):
        pool = np.flatnonzero(labels == c)
        if len(pool) < per_class:
            raise SystemExit(f"class {c} has only {len(pool)} samples, need {per_class}")
        picks.append(rng.choice(pool, size=per_class, replace=False))
    return np.sort(np.concatenate(picks))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--out", type=Path, default=ROOT / "src" / "mwt" / "data" / "demo")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for split, (prefix, per_class) in SPLITS.items():
        images = read_idx(args.source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(args.source / f"{prefix}-labels-idx1-ubyte.gz")
        idx = stratified(labels, per_class, rng)
        for kind, arr, dim in (("images", images[idx], 3), ("labels", labels[idx], 1)):
            path = args.out / f"{prefix}-{kind}-idx{dim}-ubyte.gz"
            write_idx(path, arr)
            print(f"{split}: wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
                  f" {arr.shape} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
