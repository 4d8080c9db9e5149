"""Tests of what the dataset layer hands to training: tensor augmentation, `as_tensors`, and the
augmentation each registered dataset carries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data_formats import (
    save_svhn,
    write_cifar_dir,
    write_fmnist,
)
from mwt.data import (
    Augmentation,
    ImageData,
    as_tensors,
    default_crop_padding,
    list_datasets,
    load_dataset,
)
from mwt.data.augment import augment, random_crop, random_hflip
from mwt.errors import MwtError

pytestmark = pytest.mark.usefixtures("isolated_data")


# -------------------------------------------------------------------------------------- augment


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


# ----------------------------------------------------------------------------------- as_tensors


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


# -------------------------------------------------------------------- labels checked on loading


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


# ------------------------------------------------------------------------- dataset augmentation


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
    save_svhn(root / "svhn" / "train_32x32.mat", np.array([[10], [1], [2]], np.uint8))


def test_registered_datasets_carry_their_augmentation(tmp_path):
    flip4 = Augmentation(crop_padding=4, hflip=True)
    write_fmnist(tmp_path / "fashion-mnist")
    write_cifar_dir(tmp_path, "cifar10")
    write_cifar_dir(tmp_path, "cifar100")
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
