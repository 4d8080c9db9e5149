"""Tests of the dataset readers and registry: IDX (Fashion-MNIST), CIFAR, SVHN, the errors a
user meets when files are missing, damaged or mislabelled."""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from data_formats import (
    check_cifar,
    save_svhn,
    write_cifar_dir,
    write_cifar_tar,
    write_fmnist,
)
from mwt.data import (
    DATASETS,
    ImageData,
    list_datasets,
    load_dataset,
    readers,
    register_dataset,
    registry,
)
from mwt.data.readers import read_cifar, read_idx, read_svhn, restricted_unpickle, write_idx
from mwt.errors import DatasetNotFoundError, MwtError

pytestmark = pytest.mark.usefixtures("isolated_data")


FMNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------------------------------ IDX


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


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_data_dir(tmp_path, gz):
    expected = write_fmnist(tmp_path / "fashion-mnist", gz=gz)  # dataset-named subdir
    for alias in ("fashion-mnist", "Fashion_MNIST", "fmnist"):
        d = load_dataset(alias, "test", data_dir=tmp_path)
        assert d.name == "fashion-mnist" and len(d) == 10 and d.images.shape[1:] == (1, 28, 28)
    x, y = expected["t10k"]
    want = (torch.from_numpy(x).float()[:, None] / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(d.images, want)
    assert d.labels.tolist() == y.tolist()


def test_mwt_data_env(tmp_path, monkeypatch):
    write_fmnist(tmp_path / "root" / "fashion-mnist")
    monkeypatch.setenv("MWT_DATA", str(tmp_path / "root"))
    assert len(load_dataset("fashion-mnist", "train")) == 20


def test_cache_dir_fallback(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.SYSTEM_DIRS, "fashion-mnist", [tmp_path / "nowhere"])
    write_fmnist(Path.home() / ".cache" / "mwt" / "fashion-mnist")
    assert len(load_dataset("fashion-mnist", "train")) == 20


@pytest.mark.skipif(not FMNIST_SYSTEM.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    d = load_dataset("fashion-mnist", "train")
    assert d.images.shape == (60000, 1, 28, 28)
    assert torch.bincount(d.labels).tolist() == [6000] * 10
    assert abs(d.images.mean().item()) < 1e-2 and abs(d.images.std().item() - 1) < 1e-2


# --------------------------------------------------------------------------------------- errors


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


# ---------------------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
@pytest.mark.parametrize("protocol,py2", [(2, True), (2, False), (5, False)])
def test_cifar_directory(tmp_path, variant, protocol, py2):
    folder, expected = write_cifar_dir(tmp_path, variant, protocol=protocol, py2_names=py2)
    n_train = 15 if variant == "cifar10" else 3
    for split in ("train", "test"):
        x, y, classes = read_cifar(folder, variant, split)
        assert x.shape == (n_train if split == "train" else 3, 3, 32, 32) and x.dtype == np.uint8
        np.testing.assert_array_equal(x, expected[split][0])
        assert len(classes) == (10 if variant == "cifar10" else 100)
        # Through load_dataset, with data_dir the parent, the folder itself, or the alias name.
        check_cifar(load_dataset(variant, split, data_dir=tmp_path), expected[split], variant)
        check_cifar(load_dataset(variant, split, data_dir=folder), expected[split], variant)


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_cifar_tar_gz(tmp_path, variant):
    archive = tmp_path / readers.CIFAR_LAYOUT[variant]["archive"]
    expected = write_cifar_tar(archive, variant)
    for split in ("train", "test"):
        x, y, _ = read_cifar(archive, variant, split)
        np.testing.assert_array_equal(x, expected[split][0])
        check_cifar(load_dataset(variant.replace("cifar", "CIFAR-"), split, data_dir=tmp_path),
                     expected[split], variant)


def test_malicious_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder, _ = write_cifar_dir(tmp_path, "cifar10")
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


# ----------------------------------------------------------------------------------------- SVHN


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


# -------------------------------------------------------------------- labels checked on loading


def test_svhn_labels_mapped_and_checked(tmp_path):
    path = tmp_path / "test_32x32.mat"
    save_svhn(path, np.arange(1, 11, dtype=np.uint8)[:, None])
    assert read_svhn(path)[1].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    save_svhn(path, np.array([10.0, 3.0]))  # whole-number floats, a 1-D y saved as [1, n]
    assert read_svhn(path)[1].tolist() == [0, 3]
    for bad, what in (([[1], [0], [5]], "outside 1..10"), ([[1], [11]], "outside 1..10"),
                      ([[1], [-3]], "outside 1..10"), ([[1.5], [2.0]], "not whole numbers")):
        save_svhn(path, np.array(bad))
        with pytest.raises(MwtError, match=what):
            read_svhn(path)
    # Labels that do not fit the images, images that are not SVHN's.
    save_svhn(path, np.ones((3, 1), np.uint8), n=4)
    with pytest.raises(MwtError, match="4 images but labels y of shape"):
        read_svhn(path)
    save_svhn(path, np.ones((2, 2), np.uint8), n=4)
    with pytest.raises(MwtError, match="4 images but labels y of shape"):
        read_svhn(path)
    save_svhn(path, np.ones((3, 1), np.uint8), dtype=np.float64)
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
    folder, _ = write_cifar_dir(tmp_path, variant)
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


# ------------------------------------------------------------------------ more loading mistakes


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
    write_fmnist(d)
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
