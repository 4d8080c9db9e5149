"""Tests of the dataset layer: readers, registry, download, augmentation, as_tensors."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from mwt.data import (
    DATASETS,
    ImageData,
    as_tensors,
    list_datasets,
    load_dataset,
    register_dataset,
    registry,
)
from mwt.data import download as dl
from mwt.data.augment import augment, random_crop, random_hflip
from mwt.data.readers import read_cifar, read_idx, read_svhn, restricted_unpickle, write_idx
from mwt.errors import DatasetNotFoundError, MwtError

FMNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No test may see the user's cache, $MWT_DATA or a proxy."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MWT_DATA", raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


# ------------------------------------------------------------------------------------ IDX


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_idx_roundtrip(tmp_path, name):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    path = tmp_path / name
    write_idx(path, arr)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    payload = gzip.decompress(raw) if name.endswith(".gz") else raw
    assert payload[:4] == bytes([0, 0, 0x08, 3])
    assert int.from_bytes(payload[4:8], "big") == 5
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (5, 4, 3)
    np.testing.assert_array_equal(out, arr)
    np.testing.assert_array_equal(read_idx(raw), arr)  # from bytes too


def test_idx_handwritten_int32(tmp_path):
    # A big-endian int32 IDX written by hand, not by write_idx.
    values = np.array([1, -2, 70000], dtype=">i4")
    path = tmp_path / "labels-idx1"
    path.write_bytes(bytes([0, 0, 0x0C, 1]) + (3).to_bytes(4, "big") + values.tobytes())
    out = read_idx(path)
    assert out.tolist() == [1, -2, 70000]
    assert out.dtype == np.int32


def test_idx_truncated_is_error(tmp_path):
    path = tmp_path / "bad-idx3-ubyte"
    write_idx(path, np.zeros((4, 2, 2), np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(MwtError, match="truncated or corrupted"):
        read_idx(path)
    path.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(MwtError, match="not an IDX file"):
        read_idx(path)


def test_demo_dataset():
    train, test = load_dataset("demo", "train"), load_dataset("DEMO", "test")
    assert train.images.shape == (6000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert train.num_classes == 10 and train.in_channels == 1 and train.image_size == (28, 28)
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert torch.bincount(train.labels, minlength=10).tolist() == [600] * 10
    assert torch.bincount(test.labels, minlength=10).tolist() == [100] * 10
    assert train.mean == (0.2860,) and train.std == (0.3530,)
    # Normalised with Fashion-MNIST's statistics: roughly zero mean, unit std on a subset.
    assert abs(train.images.mean().item()) < 0.05 and abs(train.images.std().item() - 1) < 0.05
    lo = (0 - 0.2860) / 0.3530
    assert train.images.min().item() == pytest.approx(lo, abs=1e-5)
    # data_dir is ignored for the demo.
    assert len(load_dataset("demo", data_dir="/nonexistent")) == 6000


def test_demo_files_small():
    demo = Path(registry.__file__).parent / "demo"
    total = sum(p.stat().st_size for p in demo.iterdir())
    assert total < 6_000_000
    assert (demo / "LICENSE-fashion-mnist.txt").read_text().count("Zalando SE") == 1


def _write_fmnist(directory: Path, n_train=20, n_test=10, gz=True):
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


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_data_dir(tmp_path, gz):
    expected = _write_fmnist(tmp_path / "fashion-mnist", gz=gz)  # dataset-named subdir
    for alias in ("fashion-mnist", "Fashion_MNIST", "fmnist"):
        d = load_dataset(alias, "test", data_dir=tmp_path)
        assert d.name == "fashion-mnist" and len(d) == 10 and d.images.shape[1:] == (1, 28, 28)
    x, y = expected["t10k"]
    want = (torch.from_numpy(x).float()[:, None] / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(d.images, want)
    assert d.labels.tolist() == y.tolist()


def test_mwt_data_env(tmp_path, monkeypatch):
    _write_fmnist(tmp_path / "root" / "fashion-mnist")
    monkeypatch.setenv("MWT_DATA", str(tmp_path / "root"))
    assert len(load_dataset("fashion-mnist", "train")) == 20


def test_cache_dir_fallback(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.SYSTEM_DIRS, "fashion-mnist", [tmp_path / "nowhere"])
    _write_fmnist(Path.home() / ".cache" / "mwt" / "fashion-mnist")
    assert len(load_dataset("fashion-mnist", "train")) == 20


@pytest.mark.skipif(not FMNIST_SYSTEM.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    d = load_dataset("fashion-mnist", "train")
    assert d.images.shape == (60000, 1, 28, 28)
    assert torch.bincount(d.labels).tolist() == [6000] * 10
    assert abs(d.images.mean().item()) < 1e-2 and abs(d.images.std().item() - 1) < 1e-2


# ---------------------------------------------------------------------------------- errors


def test_explicit_data_dir_without_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("fashion-mnist", "cifar10", "cifar100", "svhn"):
        with pytest.raises(DatasetNotFoundError) as info:
            load_dataset(name, data_dir=empty)
        msg = str(info.value)
        assert str(empty) in msg and "--download" in msg
        assert "/usr/share" not in msg and ".cache" not in msg  # no silent fallback


def test_default_places_listed(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.SYSTEM_DIRS, "fashion-mnist", [tmp_path / "sys"])
    monkeypatch.setenv("MWT_DATA", str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist")
    msg = str(info.value)
    for place in (tmp_path / "env", tmp_path / "sys", Path.home() / ".cache/mwt/fashion-mnist"):
        assert str(place) in msg
    assert "apt-get install dataset-fashion-mnist" in msg


def test_unknown_name_and_split():
    with pytest.raises(MwtError) as info:
        load_dataset("imagenet")
    assert "imagenet" in str(info.value) and "cifar10" in str(info.value)
    with pytest.raises(MwtError, match="split"):
        load_dataset("demo", "validation")


def test_registry():
    assert list_datasets() == ["cifar10", "cifar100", "demo", "fashion-mnist", "svhn"]
    tiny = ImageData(torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 0]), ["a", "b"], name="tiny")
    register_dataset("Tiny", lambda split, data_dir, download: tiny)
    try:
        assert "tiny" in list_datasets()
        assert load_dataset("TINY") is tiny
    finally:
        DATASETS.pop("tiny")


# ----------------------------------------------------------------------------------- CIFAR


class _Py2Array:
    """Pickles like a numpy array did under Python 2: raw data as a (latin-1) text string."""

    def __init__(self, arr: np.ndarray):
        self.arr = arr

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        state = (1, self.arr.shape, self.arr.dtype, False, self.arr.tobytes().decode("latin1"))
        return (_reconstruct, (np.ndarray, (0,), b"b"), state)


def _pickle(obj, protocol: int, py2_names: bool = False) -> bytes:
    if not py2_names:
        return pickle.dumps(obj, protocol=protocol)
    # Mimic the official (Python 2 cPickle) batches: str keys, arrays whose state holds a str,
    # and the numpy.core.multiarray module name.
    assert protocol == 2
    obj = {k.decode(): (_Py2Array(v) if isinstance(v, np.ndarray) else v) for k, v in obj.items()}
    raw = pickle.dumps(obj, protocol=2)
    if b"_reconstruct" in raw:
        assert b"numpy._core.multiarray\n_reconstruct" in raw
        raw = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    return raw


def _cifar_files(variant: str, protocol: int = 2, py2_names: bool = False):
    """Tiny CIFAR batch files in the official layout: {name: bytes} and the expected arrays."""
    rng = np.random.default_rng(2)
    layout = registry.readers.CIFAR_LAYOUT[variant]
    k = 10 if variant == "cifar10" else 100
    names = [f"class{i}" for i in range(k)]
    files = {}
    if variant == "cifar10":
        files["batches.meta"] = _pickle({b"label_names": [n.encode() for n in names],
                                         b"num_cases_per_batch": 3}, protocol, py2_names)
    else:
        files["meta"] = _pickle({b"fine_label_names": [n.encode() for n in names],
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
            files[fname] = _pickle(batch, protocol, py2_names)
            xs.append(x)
            ys += y
        expected[split] = (np.concatenate(xs).reshape(-1, 3, 32, 32), np.array(ys), names)
    return files, expected


def _write_cifar_dir(root: Path, variant: str, **kw):
    files, expected = _cifar_files(variant, **kw)
    folder = root / registry.readers.CIFAR_LAYOUT[variant]["folder"]
    folder.mkdir(parents=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder, expected


def _write_cifar_tar(path: Path, variant: str, extra: list[tuple[str, bytes]] = (), **kw):
    files, expected = _cifar_files(variant, **kw)
    folder = registry.readers.CIFAR_LAYOUT[variant]["folder"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        members = [(f"{folder}/{n}", raw) for n, raw in files.items()] + list(extra)
        for name, raw in members:
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return expected


def _check_cifar(d: ImageData, expected, variant: str):
    x, y, names = expected
    mean, std = registry.NORMALIZATION[variant]
    want = (torch.from_numpy(x).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) \
        / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(d.images, want)
    assert d.labels.tolist() == y.tolist()
    assert d.classes == names and d.name == variant and d.hflip and d.mean == mean


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
@pytest.mark.parametrize("protocol,py2", [(2, True), (2, False), (5, False)])
def test_cifar_directory(tmp_path, variant, protocol, py2):
    folder, expected = _write_cifar_dir(tmp_path, variant, protocol=protocol, py2_names=py2)
    n_train = 15 if variant == "cifar10" else 3
    for split in ("train", "test"):
        x, y, classes = read_cifar(folder, variant, split)
        assert x.shape == (n_train if split == "train" else 3, 3, 32, 32) and x.dtype == np.uint8
        np.testing.assert_array_equal(x, expected[split][0])
        assert len(classes) == (10 if variant == "cifar10" else 100)
        # Through load_dataset, with data_dir the parent, the folder itself, or the alias name.
        _check_cifar(load_dataset(variant, split, data_dir=tmp_path), expected[split], variant)
        _check_cifar(load_dataset(variant, split, data_dir=folder), expected[split], variant)


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_cifar_tar_gz(tmp_path, variant):
    archive = tmp_path / registry.readers.CIFAR_LAYOUT[variant]["archive"]
    expected = _write_cifar_tar(archive, variant)
    for split in ("train", "test"):
        x, y, _ = read_cifar(archive, variant, split)
        np.testing.assert_array_equal(x, expected[split][0])
        _check_cifar(load_dataset(variant.replace("cifar", "CIFAR-"), split, data_dir=tmp_path),
                     expected[split], variant)


def test_malicious_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder, _ = _write_cifar_dir(tmp_path, "cifar10")
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(MwtError, match="malicious") as info:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "system" in str(info.value)
    assert not marker.exists()
    # Other code-running globals are refused too, at any protocol.
    for protocol in (0, 2, 5):
        with pytest.raises(MwtError):
            restricted_unpickle(pickle.dumps(Evil(), protocol=protocol))
        with pytest.raises(MwtError):
            restricted_unpickle(pickle.dumps(functools.partial(print, 1), protocol=protocol))
    assert not marker.exists()


def test_garbage_pickle_is_error(tmp_path):
    with pytest.raises(MwtError, match="not a readable pickle"):
        restricted_unpickle(b"\x80\x02}q\x00(", "x")


# ------------------------------------------------------------------------------------ SVHN


def test_svhn(tmp_path):
    rng = np.random.default_rng(3)
    n = 7
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = np.array([[10], [1], [2], [3], [9], [10], [5]], dtype=np.uint8)
    (tmp_path / "svhn").mkdir()
    scipy.io.savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": x, "y": y})
    images, labels = read_svhn(tmp_path / "svhn" / "test_32x32.mat")
    assert images.shape == (n, 3, 32, 32) and labels.tolist() == [0, 1, 2, 3, 9, 0, 5]
    np.testing.assert_array_equal(images[4, 2], x[:, :, 2, 4])  # sample 4, blue channel
    d = load_dataset("SVHN", "test", data_dir=tmp_path)
    assert d.hflip is False and d.classes == [str(i) for i in range(10)]
    assert d.images.shape == (n, 3, 32, 32) and d.labels.tolist() == labels.tolist()
    want = (x[5, 6, 1, 3] / 255 - 0.4438) / 0.2010
    assert d.images[3, 1, 5, 6].item() == pytest.approx(want, abs=1e-5)


# -------------------------------------------------------------------------------- download


@pytest.fixture
def http_dir(tmp_path):
    """Serve a directory on 127.0.0.1; yields (directory, base_url)."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_cifar10_then_load(tmp_path, http_dir):
    root, url = http_dir
    expected = _write_cifar_tar(root / "cifar-10-python.tar.gz", "cifar10")
    target = tmp_path / "data"
    out = dl.download("cifar10", target, base_url=url, check_md5=False, progress=False)
    assert out == target
    assert sorted(p.name for p in target.iterdir()) == ["cifar-10-batches-py"]  # archive removed
    _check_cifar(load_dataset("cifar10", "test", data_dir=target), expected["test"], "cifar10")


def test_download_md5_checked(tmp_path, http_dir, monkeypatch):
    root, url = http_dir
    _write_cifar_tar(root / "cifar-10-python.tar.gz", "cifar10")
    target = tmp_path / "data"
    with pytest.raises(MwtError, match="MD5") as info:
        dl.download("cifar10", target, base_url=url, progress=False)
    assert "c58f30108f718f92721af3b95e74349a" in str(info.value)
    assert list(target.iterdir()) == []  # no partial or temporary file left
    # With the right checksum the same file is accepted.
    good = hashlib.md5((root / "cifar-10-python.tar.gz").read_bytes()).hexdigest()
    files = {s: [("cifar-10-python.tar.gz", good)] for s in ("train", "test")}
    monkeypatch.setitem(dl.SOURCES, "cifar10", {**dl.SOURCES["cifar10"], "files": files})
    dl.download("cifar10", target, base_url=url, progress=False)
    assert (target / "cifar-10-batches-py" / "data_batch_5").is_file()


def test_load_dataset_download_flag(tmp_path, http_dir, monkeypatch):
    root, url = http_dir
    _write_fmnist(root)
    monkeypatch.setattr(registry, "_download", functools.partial(
        dl.download, base_url=url, check_md5=False, progress=False))
    target = tmp_path / "fm"
    with pytest.raises(DatasetNotFoundError):
        load_dataset("fashion-mnist", "test", data_dir=target)
    d = load_dataset("fashion-mnist", "test", data_dir=target, download=True)
    assert len(d) == 10
    assert sorted(p.name for p in target.iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]  # only the split asked for


def test_download_http_error(tmp_path, http_dir):
    _, url = http_dir
    target = tmp_path / "data"
    with pytest.raises(MwtError, match="Could not download") as info:
        dl.download("svhn", target, splits=["test"], base_url=url, progress=False)
    assert "test_32x32.mat" in str(info.value)
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("bad", ["../evil", "/abs/evil", "a/../../evil", "link"])
def test_safe_extract_rejects(tmp_path, bad):
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        ok = tarfile.TarInfo("good/file")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        info = tarfile.TarInfo(bad)
        if bad == "link":
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
        else:
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
    target = tmp_path / "out" / "inner"
    with pytest.raises(MwtError, match="Refused to extract"):
        dl.safe_extract(archive, target)
    assert list(target.iterdir()) == []  # nothing extracted, not even the good member
    assert not (tmp_path / "out" / "evil").exists() and not (tmp_path / "evil").exists()


# --------------------------------------------------------------------------------- augment


def _batch(n=6, c=3, h=8, w=10, seed=0):
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_random_crop_shape_identity_and_seed():
    x = _batch()
    assert random_crop(x, 4, torch.Generator().manual_seed(0)).shape == x.shape
    assert torch.equal(random_crop(x, 0, torch.Generator().manual_seed(0)), x)
    a = random_crop(x, 3, torch.Generator().manual_seed(7))
    b = random_crop(x, 3, torch.Generator().manual_seed(7))
    c = random_crop(x, 3, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_crop_windows_brute_force():
    x = _batch(n=16)
    p = 2
    out = random_crop(x, p, torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    h, w = x.shape[2:]
    offsets = set()
    for n in range(len(x)):
        hits = [(i, j) for i in range(2 * p + 1) for j in range(2 * p + 1)
                if torch.equal(padded[n, :, i:i + h, j:j + w], out[n])]
        assert hits, f"sample {n} is not a window of its padded image"
        offsets.add(hits[0])
    assert len(offsets) > 1  # offsets differ between samples


def test_random_hflip():
    x = _batch(n=32)
    assert torch.equal(x.flip(-1).flip(-1), x)
    once = random_hflip(x, torch.Generator().manual_seed(5))
    twice = random_hflip(once, torch.Generator().manual_seed(5))
    assert torch.equal(twice, x)  # the same draws flip the same samples back
    flipped = [not torch.equal(once[i], x[i]) for i in range(len(x))]
    assert 0 < sum(flipped) < len(x)
    for i, f in enumerate(flipped):
        assert torch.equal(once[i], x[i].flip(-1) if f else x[i])


def test_augment_reproducible_and_checks():
    x = _batch()
    a = augment(x, generator=torch.Generator().manual_seed(1))
    b = augment(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    assert torch.equal(augment(x, padding=0, hflip=False), x)
    with pytest.raises(MwtError, match="batch tensor"):
        augment(x[0])
    if torch.cuda.is_available():
        with pytest.raises(MwtError, match="generator"):
            augment(x.cuda(), generator=torch.Generator())


# ------------------------------------------------------------------------------ as_tensors


def test_as_tensors_all_kinds_agree():
    rng = np.random.default_rng(4)
    x_u8 = rng.integers(0, 256, size=(9, 1, 5, 5), dtype=np.uint8)
    y = rng.integers(0, 3, size=9)
    ref_x = torch.from_numpy(x_u8).float() / 255
    ref_y = torch.from_numpy(y).long()
    data = ImageData(ref_x.clone(), ref_y.clone(), ["a", "b", "c"])
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x_u8), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)
    kinds = {
        "numpy": (x_u8, y),
        "numpy3d": (x_u8[:, 0], y),
        "tensor": (torch.from_numpy(x_u8), torch.from_numpy(y)),
        "float": (ref_x, ref_y.int()),
        "list": [torch.from_numpy(x_u8), torch.from_numpy(y)],
        "imagedata": data,
        "dataset": ds,
        "loader": loader,
    }
    for kind, value in kinds.items():
        x_out, y_out = as_tensors(value)
        assert x_out.dtype == torch.float32 and y_out.dtype == torch.int64, kind
        assert x_out.shape == (9, 1, 5, 5), kind
        torch.testing.assert_close(x_out, ref_x, rtol=0, atol=0, msg=kind)
        assert torch.equal(y_out, ref_y), kind


def test_as_tensors_bad_input():
    x = torch.zeros(4, 1, 3, 3)
    with pytest.raises(MwtError, match="4 images but 3 labels"):
        as_tensors((x, torch.zeros(3, dtype=torch.long)))
    with pytest.raises(MwtError, match="integer"):
        as_tensors((x, torch.zeros(4)))
    with pytest.raises(MwtError, match="shape"):
        as_tensors((torch.zeros(4, 9), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(MwtError):
        as_tensors("not data")
    with pytest.raises(MwtError):
        as_tensors((x, torch.full((4,), -1)))


def test_imagedata_subset_and_to():
    d = load_dataset("demo", "test")
    s = d.subset([0, 5, 7])
    assert len(s) == 3 and torch.equal(s.images[1], d.images[5]) and s.classes == d.classes
    assert s.mean == d.mean and s.name == "demo"
    m = d.subset(d.labels == 3)
    assert len(m) == 100 and bool((m.labels == 3).all())
    assert d.to("cpu").images.device.type == "cpu"
    img, lab = d[4]
    assert img.shape == (1, 28, 28) and lab.dtype == torch.int64
