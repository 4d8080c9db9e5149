"""Tests of the dataset layer: readers, registry, download, augmentation, as_tensors."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import socket
import tarfile
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from mwt.data import (
    DATASETS,
    Augmentation,
    ImageData,
    as_tensors,
    default_crop_padding,
    list_datasets,
    load_dataset,
    loaders,
    readers,
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
    layout = readers.CIFAR_LAYOUT[variant]
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
    folder = root / readers.CIFAR_LAYOUT[variant]["folder"]
    folder.mkdir(parents=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder, expected


def _write_cifar_tar(path: Path, variant: str, extra: list[tuple[str, bytes]] = (), **kw):
    files, expected = _cifar_files(variant, **kw)
    folder = readers.CIFAR_LAYOUT[variant]["folder"]
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
    archive = tmp_path / readers.CIFAR_LAYOUT[variant]["archive"]
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


def test_download_checksums_checked(tmp_path, http_dir, monkeypatch):
    root, url = http_dir
    _write_cifar_tar(root / "cifar-10-python.tar.gz", "cifar10")
    raw = (root / "cifar-10-python.tar.gz").read_bytes()
    size, sha, md5 = len(raw), hashlib.sha256(raw).hexdigest(), hashlib.md5(raw).hexdigest()
    target = tmp_path / "data"

    def official(entry):
        files = {s: [entry] for s in ("train", "test")}
        monkeypatch.setitem(dl.SOURCES, "cifar10", {**dl.SOURCES["cifar10"], "files": files})

    # The real table: our tiny archive is not the official file.
    with pytest.raises(MwtError, match="instead of the official 170498071"):
        dl.download("cifar10", target, base_url=url, progress=False)
    assert list(target.iterdir()) == []  # no partial or temporary file left
    # Right size, wrong SHA-256 / MD5: refused, each with the official value in the message.
    official(dl.OfficialFile("cifar-10-python.tar.gz", "0" * 64, size, md5))
    with pytest.raises(MwtError, match="SHA-256 " + sha + " instead of the official 0000"):
        dl.download("cifar10", target, base_url=url, progress=False)
    official(dl.OfficialFile("cifar-10-python.tar.gz", sha, size, "f" * 32))
    with pytest.raises(MwtError, match="MD5 " + md5):
        dl.download("cifar10", target, base_url=url, progress=False)
    assert list(target.iterdir()) == []
    # An old-style (name, md5) entry is still understood.
    official(("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"))
    with pytest.raises(MwtError, match="MD5"):
        dl.download("cifar10", target, base_url=url, progress=False)
    # verify=False (or its older name check_md5=False) skips the comparison...
    dl.download("cifar10", target, base_url=url, progress=False, check_md5=False)
    assert (target / "cifar-10-batches-py" / "data_batch_5").is_file()
    # ...and contradicting the two is an error.
    with pytest.raises(MwtError, match="verify and check_md5"):
        dl.download("cifar10", target, base_url=url, verify=False, check_md5=True)
    # With the right size and checksums the file is accepted.
    other = tmp_path / "other"
    official(dl.OfficialFile("cifar-10-python.tar.gz", sha, size, md5))
    dl.download("cifar10", other, base_url=url, progress=False)
    assert (other / "cifar-10-batches-py" / "data_batch_5").is_file()
    official(("cifar-10-python.tar.gz", sha))  # a (name, sha256) pair
    dl.download("cifar10", tmp_path / "third", base_url=url, progress=False)
    assert sorted(p.name for p in (tmp_path / "third").iterdir()) == ["cifar-10-batches-py"]


def test_load_dataset_download_flag(tmp_path, http_dir, monkeypatch):
    root, url = http_dir
    _write_fmnist(root)
    monkeypatch.setattr(loaders, "_download", functools.partial(
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
    with pytest.raises(MwtError, match="could not download") as info:
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
    with pytest.raises(MwtError, match="refused to extract"):
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


# ------------------------------------------------------- extraction never deletes user data


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return path


def _user_folder(target: Path, name: str = "cifar-10-batches-py") -> Path:
    folder = target / name
    folder.mkdir(parents=True)
    (folder / "my-notes.txt").write_text("precious")
    return folder


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_safe_extract_keeps_existing_folder(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", {"cifar-10-batches-py/data_batch_1": b"new"})
    target = tmp_path / "out"
    _user_folder(target)
    before = _tree(target)
    for expected in ("cifar-10-batches-py", None):
        with pytest.raises(MwtError, match="already exists") as info:
            dl.safe_extract(archive, target, expected=expected)
        assert str(target / "cifar-10-batches-py") in str(info.value)
        assert _tree(target) == before  # sentinel kept, nothing added, no staging dir left
    assert (target / "cifar-10-batches-py" / "my-notes.txt").read_text() == "precious"


def test_safe_extract_moves_only_the_expected_folder(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", {
        "cifar-10-batches-py/data_batch_1": b"one",
        "cifar-10-batches-py/sub/x": b"x",
        "other/file": b"other",
        "README": b"readme",
    })
    target = tmp_path / "out"
    _user_folder(target, "other")  # a same-named folder of another top-level entry
    created = dl.safe_extract(archive, target, expected="cifar-10-batches-py")
    assert created == [target / "cifar-10-batches-py"]
    assert _tree(target) == ["cifar-10-batches-py", "cifar-10-batches-py/data_batch_1",
                             "cifar-10-batches-py/sub", "cifar-10-batches-py/sub/x", "other",
                             "other/my-notes.txt"]
    assert (target / "cifar-10-batches-py" / "data_batch_1").read_bytes() == b"one"
    # An archive without the expected folder is refused; a bad name too.
    with pytest.raises(MwtError, match="does not contain cifar-100-python"):
        dl.safe_extract(archive, tmp_path / "o2", expected="cifar-100-python")
    assert list((tmp_path / "o2").iterdir()) == []
    for bad in ("", "..", "a/b"):
        with pytest.raises(MwtError, match="plain file or folder name"):
            dl.safe_extract(archive, tmp_path / "o3", expected=bad)


def test_safe_extract_without_expected_is_all_or_nothing(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", {"a/x": b"a", "b/y": b"b"})
    target = tmp_path / "out"
    _user_folder(target, "b")
    with pytest.raises(MwtError, match="already exists"):
        dl.safe_extract(archive, target)
    assert _tree(target) == ["b", "b/my-notes.txt"]  # "a" was not moved either
    assert dl.safe_extract(archive, tmp_path / "fresh") == [tmp_path / "fresh" / "a",
                                                           tmp_path / "fresh" / "b"]


def test_download_force_never_deletes_user_folder(tmp_path, http_dir):
    root, url = http_dir
    _write_cifar_tar(root / "cifar-10-python.tar.gz", "cifar10")
    target = tmp_path / "data"
    _user_folder(target)
    # The user's own copy of the archive under the official name is never touched either.
    (target / "cifar-10-python.tar.gz").write_bytes(b"the user's file")
    before = _tree(target)
    with pytest.raises(MwtError, match="already exists"):
        dl.download("cifar10", target, base_url=url, verify=False, force=True, progress=False)
    assert _tree(target) == before
    assert (target / "cifar-10-batches-py" / "my-notes.txt").read_text() == "precious"
    # Without force the existing folder is taken as the download (nothing fetched).
    assert dl.download("cifar10", target, base_url=url, verify=False, progress=False) == target
    assert _tree(target) == before
    # Once the user moved it away, the download goes through beside their archive.
    (target / "cifar-10-batches-py").rename(tmp_path / "moved")
    dl.download("cifar10", target, base_url=url, verify=False, force=True, progress=False)
    assert (target / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert (target / "cifar-10-python.tar.gz").read_bytes() == b"the user's file"
    assert sorted(p.name for p in target.iterdir()) == ["cifar-10-batches-py",
                                                        "cifar-10-python.tar.gz"]


def test_corrupted_archive_stream_is_error(tmp_path):
    # A .tar.gz whose deflate data breaks mid-stream: zlib.error, not a traceback.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name in ("batches.meta", "test_batch"):
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = 5000
            tf.addfile(info, io.BytesIO(b"x" * 5000))
    raw = buf.getvalue()
    broken = bytearray(gzip.compress(raw[1024:], mtime=0))
    broken[10] = 0x07  # deflate block type 3 does not exist
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(gzip.compress(raw[:1024], mtime=0) + bytes(broken))
    with pytest.raises(MwtError, match="not a readable tar archive") as info:
        read_cifar(archive, "cifar10", "test")
    assert isinstance(info.value.__cause__, zlib.error)
    with pytest.raises(MwtError, match="could not extract") as info:
        dl.safe_extract(archive, tmp_path / "out", expected="cifar-10-batches-py")
    assert isinstance(info.value.__cause__, zlib.error)
    assert list((tmp_path / "out").iterdir()) == []


# ------------------------------------------------------------- official sources, transport


def test_sources_pin_sha256_and_size():
    for name, source in dl.SOURCES.items():
        for split, entries in source["files"].items():
            for entry in entries:
                assert isinstance(entry, dl.OfficialFile), (name, split)
                assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0, entry
                assert len(entry.md5) == 32 and isinstance(entry.size, int), entry
    assert dl.SOURCES["fashion-mnist"]["base_url"].startswith("https://")
    assert dl.SOURCES["cifar10"]["base_url"].startswith("https://")
    assert dl.SOURCES["cifar100"]["base_url"].startswith("https://")
    assert (dl.SOURCES["cifar10"]["files"]["train"][0].sha256
            == "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce")


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_download_falls_back_when_a_server_is_down(tmp_path, http_dir, monkeypatch):
    root, url = http_dir
    expected = _write_fmnist(root)
    down = _closed_port_url()
    monkeypatch.setitem(dl.SOURCES, "fashion-mnist", {
        **dl.SOURCES["fashion-mnist"], "base_url": down, "fallback_urls": [url]})
    target = tmp_path / "fm"
    dl.download("fashion-mnist", target, splits="test", verify=False, progress=False)
    assert sorted(p.name for p in target.iterdir()) == [  # a single split given as a string
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    np.testing.assert_array_equal(read_idx(target / "t10k-labels-idx1-ubyte.gz"),
                                  expected["t10k"][1])
    # When no server answers the error names them all.
    monkeypatch.setitem(dl.SOURCES, "fashion-mnist", {
        **dl.SOURCES["fashion-mnist"], "base_url": down, "fallback_urls": [down + "x/"]})
    with pytest.raises(MwtError, match="from any server") as info:
        dl.download("fashion-mnist", tmp_path / "fm2", splits=["train"], progress=False)
    assert down + "train-images" in str(info.value) and down + "x/train" in str(info.value)
    assert list((tmp_path / "fm2").iterdir()) == []


@pytest.mark.parametrize("chunked", [False, True])
def test_download_cut_short_is_error(tmp_path, chunked):
    class Liar(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            if chunked:  # a chunk announced as 0x10000 bytes, of which 14 arrive
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"10000\r\nonly this much")
            else:
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b"only this much")
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Liar)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with pytest.raises(MwtError) as info:
            dl.download("svhn", tmp_path / "s", splits="test", base_url=url, progress=False)
        want = "before the whole file arrived" if chunked else "stopped after 14 of 100000"
        assert want in str(info.value)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert list((tmp_path / "s").iterdir()) == []


def test_download_bad_split_names(tmp_path):
    with pytest.raises(MwtError, match="unknown split 'validation'"):
        dl.download("svhn", tmp_path, splits="validation", progress=False)
    with pytest.raises(MwtError, match="cannot be downloaded"):
        dl.download("demo", tmp_path, progress=False)
    # A download directory that cannot be written into (here: gone) is a one-line error.
    with pytest.raises(MwtError, match="cannot write into the download directory"):
        dl._fetch("http://127.0.0.1:9/x", tmp_path / "gone" / "x", None, False, 1.0)


# ---------------------------------------------------------------- labels checked on loading


def _save_svhn(path: Path, y, n: int | None = None, dtype=np.uint8) -> np.ndarray:
    n = len(np.asarray(y).reshape(-1)) if n is None else n
    x = np.random.default_rng(5).integers(0, 256, size=(32, 32, 3, n)).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"X": x, "y": y})
    return x


def test_svhn_labels_mapped_and_checked(tmp_path):
    path = tmp_path / "test_32x32.mat"
    _save_svhn(path, np.arange(1, 11, dtype=np.uint8)[:, None])
    assert read_svhn(path)[1].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    _save_svhn(path, np.array([10.0, 3.0]))  # whole-number floats, a 1-D y saved as [1, n]
    assert read_svhn(path)[1].tolist() == [0, 3]
    for bad, what in (([[1], [0], [5]], "outside 1..10"), ([[1], [11]], "outside 1..10"),
                      ([[1], [-3]], "outside 1..10"), ([[1.5], [2.0]], "not whole numbers")):
        _save_svhn(path, np.array(bad))
        with pytest.raises(MwtError, match=what):
            read_svhn(path)
    # Labels that do not fit the images, images that are not SVHN's.
    _save_svhn(path, np.ones((3, 1), np.uint8), n=4)
    with pytest.raises(MwtError, match="4 images but labels y of shape"):
        read_svhn(path)
    _save_svhn(path, np.ones((2, 2), np.uint8), n=4)
    with pytest.raises(MwtError, match="4 images but labels y of shape"):
        read_svhn(path)
    _save_svhn(path, np.ones((3, 1), np.uint8), dtype=np.float64)
    with pytest.raises(MwtError, match="not uint8"):
        read_svhn(path)
    # Garbage and empty files: scipy raises IndexError / MatReadError, we raise MwtError.
    for raw in (b"hello world" * 10, b""):
        path.write_bytes(raw)
        with pytest.raises(MwtError, match="not a readable SVHN .mat file"):
            read_svhn(path)


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_cifar_labels_checked(tmp_path, variant):
    layout = readers.CIFAR_LAYOUT[variant]
    k = layout["num_classes"]
    folder, _ = _write_cifar_dir(tmp_path, variant)
    batch = folder / layout["test"][0]
    good = pickle.loads(batch.read_bytes())
    for labels, what in (([0, k, 1], f"outside 0..{k - 1}"), ([0, -1, 1], f"outside 0..{k - 1}"),
                         (["a", "b", "c"], "integer labels"), ([[0], [1], [2]], "integer labels"),
                         ([0.0, 1.0, 2.0], "integer labels")):
        batch.write_bytes(pickle.dumps({**good, layout["label_key"].encode(): labels}))
        with pytest.raises(MwtError, match=what):
            read_cifar(folder, variant, "test")
    batch.write_bytes(pickle.dumps(good))
    assert len(read_cifar(folder, variant, "test")[1]) == 3
    # A meta file naming the wrong number of classes.
    meta = folder / layout["meta"]
    names = pickle.loads(meta.read_bytes())
    names[layout["names_key"].encode()] = names[layout["names_key"].encode()][:5]
    meta.write_bytes(pickle.dumps(names))
    with pytest.raises(MwtError, match=f"names 5 classes instead of {variant}'s {k}"):
        load_dataset(variant, "test", data_dir=tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_as_tensors_refuses_non_finite_images(bad):
    x = torch.zeros(4, 1, 3, 3)
    x[2, 0, 1, 1] = bad
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(MwtError, match="the images contain NaN or infinite values"):
        as_tensors((x, y))
    with pytest.raises(MwtError, match="NaN or infinite"):
        as_tensors(ImageData(x, y, ["a"]))
    with pytest.raises(MwtError, match="NaN or infinite"):
        as_tensors((x.numpy().astype(np.float64), y.numpy()))
    with pytest.raises(MwtError, match="negative"):  # the label check stays
        as_tensors((torch.zeros(4, 1, 3, 3), torch.tensor([0, 1, -2, 0])))


# ------------------------------------------------------------------- dataset augmentation


def test_default_crop_padding():
    assert default_crop_padding(32, 32) == 4
    assert default_crop_padding(28, 28) == 4  # 3.5 rounds up
    assert default_crop_padding(8, 8) == 1
    assert default_crop_padding(2, 2) == 1  # at least 1
    assert default_crop_padding(64, 96) == 8 and default_crop_padding(96, 64) == 8
    with pytest.raises(MwtError, match="positive image size"):
        default_crop_padding(0, 32)


def test_augmentation_value():
    assert Augmentation() == Augmentation(0, False)
    aug = Augmentation(crop_padding=np.int64(4), hflip=True)
    assert aug.crop_padding == 4 and type(aug.crop_padding) is int and aug.hflip is True
    assert hash(aug) == hash(Augmentation(4, True))  # frozen, usable as a dict key
    with pytest.raises(Exception):  # noqa: B017 - dataclasses.FrozenInstanceError
        aug.hflip = False
    for bad in (dict(crop_padding=-1), dict(crop_padding=2.5), dict(crop_padding=True),
                dict(hflip="no")):
        with pytest.raises(MwtError):
            Augmentation(**bad)


def _write_svhn_dir(root: Path):
    _save_svhn(root / "svhn" / "train_32x32.mat", np.array([[10], [1], [2]], np.uint8))


def test_registered_datasets_carry_their_augmentation(tmp_path):
    flip4 = Augmentation(crop_padding=4, hflip=True)
    _write_fmnist(tmp_path / "fashion-mnist")
    _write_cifar_dir(tmp_path, "cifar10")
    _write_cifar_dir(tmp_path, "cifar100")
    _write_svhn_dir(tmp_path)
    expected = {"demo": flip4, "fashion-mnist": flip4, "cifar10": flip4, "cifar100": flip4,
                "svhn": Augmentation(crop_padding=4, hflip=False)}
    assert sorted(expected) == list_datasets()
    for name, aug in expected.items():
        d = load_dataset(name, "train", data_dir=tmp_path)
        assert d.augmentation == aug, name
        assert d.augmentation.crop_padding == default_crop_padding(*d.image_size), name
        assert d.hflip == aug.hflip, name  # the older field agrees
        # subset() and to() keep it.
        assert d.subset([0, 1]).augmentation == aug and d.to("cpu").augmentation == aug


def test_custom_imagedata_not_augmented_unless_asked():
    x, y = torch.zeros(3, 1, 4, 4), torch.tensor([0, 1, 0])
    plain = ImageData(x, y, ["a", "b"])
    assert plain.augmentation is None and plain.hflip is True  # hflip keeps its old default
    # Positional construction (images, labels, classes, hflip, name, mean, std) still works.
    old = ImageData(x, y, ["a", "b"], False, "old", (0.5,), (0.2,))
    assert (old.hflip, old.name, old.mean, old.std, old.augmentation) == (
        False, "old", (0.5,), (0.2,), None)
    asked = ImageData(x, y, ["a", "b"], augmentation=Augmentation(1, False))
    assert asked.subset(torch.tensor([True, False, True])).augmentation == Augmentation(1, False)
    with pytest.raises(MwtError, match="augmentation must be"):
        ImageData(x, y, ["a", "b"], augmentation={"crop_padding": 4})


# ------------------------------------------------------------------ more loading mistakes


def test_corrupted_gzip_idx_is_error(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(path, np.arange(100, dtype=np.uint8))
    raw = bytearray(path.read_bytes())
    raw[10] = 0x07  # deflate block type 3 does not exist
    path.write_bytes(bytes(raw))
    with pytest.raises(MwtError, match="not a valid gzip file") as info:
        read_idx(path)
    assert isinstance(info.value.__cause__, zlib.error)
    # A header announcing an absurd shape is "truncated", not an overflow.
    huge = bytes([0, 0, 0x08, 4]) + (2**32 - 1).to_bytes(4, "big") * 4
    with pytest.raises(MwtError, match="truncated or corrupted"):
        read_idx(huge + b"\x00" * 16)
    with pytest.raises(MwtError, match="could not write"):
        write_idx(tmp_path / "missing" / "x-idx1-ubyte", np.zeros(3, np.uint8))


def test_fashion_mnist_wrong_image_size_is_error(tmp_path):
    d = tmp_path / "fm"
    _write_fmnist(d)
    write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((10, 32, 32), np.uint8))
    with pytest.raises(MwtError, match=r"not uint8 \[N, 28, 28\]"):
        load_dataset("fashion-mnist", "test", data_dir=d)
    write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((9, 28, 28), np.uint8))
    with pytest.raises(MwtError, match="9 images but labels of shape"):
        load_dataset("fashion-mnist", "test", data_dir=d)


def test_subset_out_of_range_and_bad_loader():
    d = ImageData(torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 0]), ["a", "b"])
    assert d.subset([-1]).labels.tolist() == [0]
    for bad in ([3], [-4]):
        with pytest.raises(MwtError, match="outside 0..2"):
            d.subset(bad)
    with pytest.raises(MwtError, match="mask of shape"):
        d.subset(torch.tensor([True, False]))
    register_dataset("broken", lambda split, data_dir, download: (d.images, d.labels))
    try:
        with pytest.raises(MwtError, match="returned a tuple, not an ImageData"):
            load_dataset("broken")
    finally:
        DATASETS.pop("broken")
