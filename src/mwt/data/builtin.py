"""The built-in datasets, each described once by a :class:`~mwt.data.spec.DatasetSpec`.

``demo`` (a stratified Fashion-MNIST subset embedded in the package), ``fashion-mnist``,
``cifar10``, ``cifar100`` and ``svhn``.  Every built-in dataset trains with the paper's random
crop with 4 pixels of zero padding and a random horizontal flip -- except SVHN, whose digits must
not be mirrored.

Where the checksums come from (no value here is computed by us):

* Fashion-MNIST: sizes and SHA-256 from tensorflow/datasets
  ``tensorflow_datasets/url_checksums/fashion_mnist.txt`` (the same SHA-256 are pinned in keras
  ``keras/src/datasets/fashion_mnist.py``); MD5 from the zalandoresearch/fashion-mnist README.
* CIFAR-10 / CIFAR-100 python archives: SHA-256 from keras ``keras/src/datasets/cifar10.py`` and
  ``cifar100.py`` (also torchvision's prototype ``datasets/_builtin/cifar.py``); MD5 from
  https://www.cs.toronto.edu/~kriz/cifar.html; sizes as the server reports them.
* SVHN cropped digits: sizes and SHA-256 from tensorflow/datasets
  ``tensorflow_datasets/url_checksums/svhn_cropped.txt`` (also torchvision's prototype
  ``datasets/_builtin/svhn.py``); MD5 from torchvision ``datasets/svhn.py``.

URLs: Fashion-MNIST's bucket is served over https by its S3 REST endpoint (the website endpoint
in the README is http-only), with the website endpoint as a fallback; CIFAR is https; SVHN's
official server is only documented over http -- the pinned SHA-256 guards its content.
"""

from __future__ import annotations

from pathlib import Path

from mwt.data.augment import Augmentation
from mwt.data.spec import DatasetSpec, OfficialFile

__all__ = ["BUILTIN_DATASETS", "SPECS", "SYSTEM_DIRS", "NORMALIZATION", "AUGMENTATION"]

_FLIP_CROP = Augmentation(crop_padding=4, hflip=True)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    pretty="Fashion-MNIST",
    aliases=("fashion_mnist", "fmnist", "fashionmnist"),
    format="idx",
    image_size=(28, 28),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
             "Sneaker", "Bag", "Ankle boot"),
    mean=(0.2860,),
    std=(0.3530,),
    augmentation=_FLIP_CROP,
    files={
        "train": (
            OfficialFile("train-images-idx3-ubyte.gz",
                         "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                         26421880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            OfficialFile("train-labels-idx1-ubyte.gz",
                         "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                         29515, "25c81989df183df01b3e8a0aad5dffbe"),
        ),
        "test": (
            OfficialFile("t10k-images-idx3-ubyte.gz",
                         "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                         4422102, "bef4ecab320f06d8554ea6380940ec79"),
            OfficialFile("t10k-labels-idx1-ubyte.gz",
                         "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                         5148, "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
    },
    # Debian's dataset-fashion-mnist package installs the files here.
    system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
    subdirs=("fashion-mnist", "FashionMNIST/raw"),
    urls=("https://fashion-mnist.s3.eu-central-1.amazonaws.com/",
          "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
    how="apt-get install dataset-fashion-mnist, or pass --data-dir (or set MWT_DATA), or "
        "--download (download=True)",
)

# 600 train and 100 test images per class of Fashion-MNIST, built by scripts/build_demo_data.py
# under the official file names; shipped in the package, so data_dir and download are ignored.
DEMO = DatasetSpec(
    name="demo",
    pretty="demo",
    format="idx",
    image_size=FASHION_MNIST.image_size,
    classes=FASHION_MNIST.classes,
    mean=FASHION_MNIST.mean,
    std=FASHION_MNIST.std,
    augmentation=_FLIP_CROP,
    files={split: tuple(OfficialFile(f.name, None) for f in files)
           for split, files in FASHION_MNIST.files.items()},
    package_dir="demo",
)

_CIFAR10_ARCHIVE = OfficialFile(
    "cifar-10-python.tar.gz", "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    170498071, "c58f30108f718f92721af3b95e74349a")
CIFAR10 = DatasetSpec(
    name="cifar10",
    pretty="CIFAR-10",
    aliases=("cifar-10",),
    format="cifar",
    image_size=(32, 32),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    augmentation=_FLIP_CROP,
    files={"train": (_CIFAR10_ARCHIVE,), "test": (_CIFAR10_ARCHIVE,)},
    extract_to="cifar-10-batches-py",
    subdirs=("cifar-10-batches-py", "cifar10"),
    urls=("https://www.cs.toronto.edu/~kriz/",),
    how="pass --data-dir (or set MWT_DATA) to where cifar-10-batches-py or "
        "cifar-10-python.tar.gz is, or --download (download=True)",
)

_CIFAR100_ARCHIVE = OfficialFile(
    "cifar-100-python.tar.gz", "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
    169001437, "eb9058c3a382ffc7106e4002c42a8d85")
CIFAR100 = DatasetSpec(
    name="cifar100",
    pretty="CIFAR-100",
    aliases=("cifar-100",),
    format="cifar",
    image_size=(32, 32),
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    augmentation=_FLIP_CROP,
    files={"train": (_CIFAR100_ARCHIVE,), "test": (_CIFAR100_ARCHIVE,)},
    extract_to="cifar-100-python",
    subdirs=("cifar-100-python", "cifar100"),
    urls=CIFAR10.urls,
    how="pass --data-dir (or set MWT_DATA) to where cifar-100-python or "
        "cifar-100-python.tar.gz is, or --download (download=True)",
)

SVHN = DatasetSpec(
    name="svhn",
    pretty="SVHN",
    format="svhn",
    image_size=(32, 32),
    classes=tuple(str(i) for i in range(10)),
    mean=(0.4377, 0.4438, 0.4728),
    std=(0.1980, 0.2010, 0.1970),
    augmentation=Augmentation(crop_padding=4, hflip=False),
    files={
        "train": (OfficialFile("train_32x32.mat",
                               "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
                               182040794, "e26dedcc434d2e4c54c9b2d4a06d8373"),),
        "test": (OfficialFile("test_32x32.mat",
                              "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
                              64275384, "eb5a983be6a315427106f1b164d9cef3"),),
    },
    subdirs=("svhn",),
    urls=("http://ufldl.stanford.edu/housenumbers/",),
    how="pass --data-dir (or set MWT_DATA) to where train_32x32.mat / test_32x32.mat are, or "
        "--download (download=True)",
)

BUILTIN_DATASETS: tuple[DatasetSpec, ...] = (DEMO, FASHION_MNIST, CIFAR10, CIFAR100, SVHN)
SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in BUILTIN_DATASETS}

# Where a distribution package installs each dataset's files: the specs' system_dirs as a table
# that tests (and packagers) may patch; the loaders read it on every call.
SYSTEM_DIRS: dict[str, list[Path]] = {
    spec.name: list(spec.system_dirs) for spec in BUILTIN_DATASETS if spec.package_dir is None
}

# Views of the specs in the shape of the tables they replaced (mwt.data.registry re-exports
# them for code written against those tables); the specs stay the one source.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    spec.name: (spec.mean, spec.std) for spec in BUILTIN_DATASETS
}
AUGMENTATION: dict[str, Augmentation] = {spec.name: spec.augmentation for spec in BUILTIN_DATASETS}
