"""Small dataset files in the official formats (IDX, CIFAR's pickled batches, SVHN's .mat), written
by the tests: CIFAR-10 and SVHN cannot be downloaded here, so their readers are tested on these."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import scipy.io
import torch

from mwt.data import (
    ImageData,
    readers,
    registry,
)
from mwt.data.readers import write_idx


def write_fmnist(directory: Path, n_train=20, n_test=10, gz=True):
    """Fashion-MNIST's four IDX files (gzipped or not) of random images; returns the arrays."""
    rng = np.random.default_rng(1)
    directory.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{ext}", x)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{ext}", y)
        out[prefix] = (x, y)
    return out


class Py2Array:
    """Pickles like a numpy array did under Python 2: raw data as a (latin-1) text string."""

    def __init__(self, arr: np.ndarray):
        self.arr = arr

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        state = (1, self.arr.shape, self.arr.dtype, False, self.arr.tobytes().decode("latin1"))
        return (_reconstruct, (np.ndarray, (0,), b"b"), state)


def pickle_bytes(obj, protocol: int, py2_names: bool = False) -> bytes:
    if not py2_names:
        return pickle.dumps(obj, protocol=protocol)
    # Mimic the official (Python 2 cPickle) batches: str keys, arrays whose state holds a str,
    # and the numpy.core.multiarray module name.
    assert protocol == 2
    obj = {k.decode(): (Py2Array(v) if isinstance(v, np.ndarray) else v) for k, v in obj.items()}
    raw = pickle.dumps(obj, protocol=2)
    if b"_reconstruct" in raw:
        assert b"numpy._core.multiarray\n_reconstruct" in raw
        raw = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    return raw


def cifar_files(variant: str, protocol: int = 2, py2_names: bool = False):
    """Tiny CIFAR batch files in the official layout: {name: bytes} and the expected arrays."""
    rng = np.random.default_rng(2)
    layout = readers.CIFAR_LAYOUT[variant]
    k = 10 if variant == "cifar10" else 100
    names = [f"class{i}" for i in range(k)]
    files = {}
    if variant == "cifar10":
        files["batches.meta"] = pickle_bytes({b"label_names": [n.encode() for n in names],
                                         b"num_cases_per_batch": 3}, protocol, py2_names)
    else:
        files["meta"] = pickle_bytes({b"fine_label_names": [n.encode() for n in names],
                                 b"coarse_label_names": [b"c%d" % i for i in range(20)]},
                                protocol, py2_names)
    expected = {}
    for split in ("train", "test"):
        xs, ys = [], []
        for fname in layout[split]:
            x = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
            y = rng.integers(0, k, size=3).tolist()
            batch = {b"data": x, layout["label_key"].encode(): y, b"filenames": [b"a", b"b"]}
            if variant == "cifar100":
                batch[b"coarse_labels"] = [0, 1, 2]
            files[fname] = pickle_bytes(batch, protocol, py2_names)
            xs.append(x)
            ys += y
        expected[split] = (np.concatenate(xs).reshape(-1, 3, 32, 32), np.array(ys), names)
    return files, expected


def write_cifar_dir(root: Path, variant: str, **kw):
    files, expected = cifar_files(variant, **kw)
    folder = root / readers.CIFAR_LAYOUT[variant]["folder"]
    folder.mkdir(parents=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder, expected


def write_cifar_tar(path: Path, variant: str, extra: list[tuple[str, bytes]] = (), **kw):
    files, expected = cifar_files(variant, **kw)
    folder = readers.CIFAR_LAYOUT[variant]["folder"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        members = [(f"{folder}/{n}", raw) for n, raw in files.items()] + list(extra)
        for name, raw in members:
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return expected


def check_cifar(d: ImageData, expected, variant: str):
    """`d` holds the expected CIFAR arrays, normalised with the dataset's statistics."""
    x, y, names = expected
    mean, std = registry.NORMALIZATION[variant]
    want = (torch.from_numpy(x).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) \
        / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(d.images, want)
    assert d.labels.tolist() == y.tolist()
    assert d.classes == names and d.name == variant and d.hflip and d.mean == mean


def save_svhn(path: Path, y, n: int | None = None, dtype=np.uint8) -> np.ndarray:
    """An SVHN .mat file (X as 32x32x3xN) with labels `y`; returns X."""
    n = len(np.asarray(y).reshape(-1)) if n is None else n
    x = np.random.default_rng(5).integers(0, 256, size=(32, 32, 3, n)).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"X": x, "y": y})
    return x
