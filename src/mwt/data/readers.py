"""Readers for the on-disk formats of the built-in datasets.

Every reader returns plain numpy arrays (uint8 images ``[N, C, H, W]``, int64 labels ``[N]``) and
is vectorised: no Python loop runs per image.

* IDX (MNIST / Fashion-MNIST), plain or gzip-compressed: :func:`read_idx`, :func:`write_idx`.
* CIFAR-10 / CIFAR-100 python pickle batches, from the extracted directory or from the official
  ``.tar.gz`` archive: :func:`read_cifar`.  The batches are pickles, so they are loaded with a
  restricted unpickler that can only rebuild builtin containers and numpy arrays; a pickle that
  names any other global (``os.system``, ...) is refused with an :class:`~mwt.errors.MwtError`.
* SVHN cropped digits ``{train,test}_32x32.mat``: :func:`read_svhn`.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mwt.errors import MwtError

__all__ = [
    "read_idx",
    "write_idx",
    "restricted_unpickle",
    "read_cifar",
    "read_cifar_batches",
    "read_svhn",
    "CIFAR_LAYOUT",
]

PathLike = str | os.PathLike

# ----------------------------------------------------------------------------------------- IDX

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(source: PathLike | bytes) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), "<bytes>"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise MwtError(f"could not read {path}: {exc.strerror or exc}") from exc


def read_idx(source: PathLike | bytes) -> np.ndarray:
    """Read an IDX file (the MNIST format), plain or gzip-compressed (detected by magic bytes).

    ``source`` is a path or the file's raw bytes.  Returns an array in native byte order with the
    shape stored in the file (``[N, H, W]`` for images, ``[N]`` for labels).
    """
    raw, where = _read_bytes(source)
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise MwtError(f"{where} is not a valid gzip file ({exc}); download it again") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise MwtError(f"{where} is not an IDX file (bad magic number); download it again")
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MwtError(f"{where} is truncated (its IDX header is incomplete); download it again")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = math.prod(shape)  # Python ints: a corrupted header cannot overflow
    if len(raw) - header != count * dtype.itemsize:
        raise MwtError(
            f"{where} holds {len(raw) - header} data bytes but its IDX header announces shape "
            f"{shape}; the file is truncated or corrupted, download it again"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))  # a writable, native-order copy


def write_idx(path: PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file; gzip-compressed when ``compress`` (default: path ends .gz).

    The gzip header carries no timestamp, so the same array always gives the same bytes.
    """
    arr = np.asarray(array)
    code = _IDX_CODES.get(arr.dtype.newbyteorder("="))
    if code is None:
        raise MwtError(f"IDX cannot store dtype {arr.dtype}; use uint8, int8, int16, int32, "
                       "float32 or float64")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(arr, dtype=_IDX_DTYPES[code]).tobytes()
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
            gz.write(payload)
        payload = buf.getvalue()
    try:
        path.write_bytes(payload)
    except OSError as exc:
        raise MwtError(f"could not write {path}: {exc.strerror or exc}") from exc


# ------------------------------------------------------------------------- restricted pickle


def _numpy_global(*candidates: str):
    """First of ``module:attr`` candidates that exists (numpy 2 renamed numpy.core -> _core)."""
    import importlib

    for spec in candidates:
        module, _, attr = spec.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
    return None


def _allowed_globals() -> dict[tuple[str, str], object]:
    import codecs

    reconstruct = _numpy_global("numpy._core.multiarray:_reconstruct",
                                "numpy.core.multiarray:_reconstruct")
    scalar = _numpy_global("numpy._core.multiarray:scalar", "numpy.core.multiarray:scalar")
    frombuffer = _numpy_global("numpy._core.numeric:_frombuffer", "numpy.core.numeric:_frombuffer")
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 pickles of bytes under protocol < 3 go through codecs.encode(str, "latin1").
        ("_codecs", "encode"): codecs.encode,
        ("codecs", "encode"): codecs.encode,
        # Harmless builtin containers (Python 2's __builtin__ is mapped to builtins on load).
        ("builtins", "list"): list,
        ("builtins", "dict"): dict,
        ("builtins", "tuple"): tuple,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        if reconstruct is not None:
            allowed[(mod, "_reconstruct")] = reconstruct
        if scalar is not None:
            allowed[(mod, "scalar")] = scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        if frombuffer is not None:
            allowed[(mod, "_frombuffer")] = frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only an allow-list of globals (numpy array rebuilding, builtins)."""

    _allowed: dict[tuple[str, str], object] | None = None

    def find_class(self, module: str, name: str):
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return _RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed")


def restricted_unpickle(raw: bytes, where: str = "<bytes>"):
    """Unpickle ``raw`` allowing only builtin containers and numpy arrays.

    Python 2 strings are decoded as latin-1 (as the CIFAR batches need).  Anything else a pickle
    asks for -- a function such as ``os.system``, an arbitrary class -- raises
    :class:`~mwt.errors.MwtError` before it is ever called.
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise MwtError(
            f"refused to load {where}: {exc}, which a dataset file never needs, so the file is "
            "corrupted or malicious; delete it and download the dataset again"
        ) from exc
    except Exception as exc:  # truncated / garbage pickles raise all sorts of errors
        raise MwtError(
            f"{where} is not a readable pickle ({type(exc).__name__}: {exc}); delete it and "
            "download the dataset again"
        ) from exc


# ------------------------------------------------------------------------------------- CIFAR

# variant -> (folder name inside the archive, archive name, train files, test files, meta file,
#             label key, class-names key, number of classes)
CIFAR_LAYOUT: dict[str, dict] = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "archive": "cifar-10-python.tar.gz",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "label_key": "labels",
        "names_key": "label_names",
        "num_classes": 10,
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "archive": "cifar-100-python.tar.gz",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "label_key": "fine_labels",
        "names_key": "fine_label_names",
        "num_classes": 100,
    },
}


def _str_keys(obj, where: str) -> dict:
    if not isinstance(obj, dict):
        raise MwtError(f"{where} does not hold a dict as a CIFAR batch does; download it again")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _to_str(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def read_cifar_batches(
    files: dict[str, bytes], variant: str, split: str, where: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Parse the raw bytes of CIFAR batch files (name -> bytes) into images, labels, classes."""
    layout = CIFAR_LAYOUT[variant]
    meta = _str_keys(restricted_unpickle(files[layout["meta"]], f"{where}/{layout['meta']}"),
                     f"{where}/{layout['meta']}")
    if layout["names_key"] not in meta:
        raise MwtError(f"{where}/{layout['meta']} has no {layout['names_key']!r} entry; "
                       "download the dataset again")
    try:
        classes = [_to_str(n) for n in meta[layout["names_key"]]]
    except TypeError:
        classes = []
    k = layout["num_classes"]
    if len(classes) != k:
        raise MwtError(f"{where}/{layout['meta']} names {len(classes)} classes instead of "
                       f"{variant}'s {k}; download the dataset again")
    images, labels = [], []
    for fname in layout[split]:
        fwhere = f"{where}/{fname}"
        batch = _str_keys(restricted_unpickle(files[fname], fwhere), fwhere)
        if "data" not in batch or layout["label_key"] not in batch:
            raise MwtError(f"{fwhere} lacks 'data' or {layout['label_key']!r}; "
                           "download the dataset again")
        data = np.asarray(batch["data"])
        lab = np.asarray(batch[layout["label_key"]])
        if lab.ndim != 1 or not (np.issubdtype(lab.dtype, np.integer) or lab.size == 0):
            raise MwtError(f"{fwhere} holds {layout['label_key']!r} of shape {lab.shape} and "
                           f"dtype {lab.dtype}, not a list of integer labels; download the "
                           "dataset again")
        lab = lab.astype(np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise MwtError(f"{fwhere} holds data of shape {data.shape} and dtype {data.dtype}, "
                           "not uint8 [n, 3072]; download the dataset again")
        if len(lab) != len(data):
            raise MwtError(f"{fwhere} has {len(data)} images but {len(lab)} labels; "
                           "download the dataset again")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    x = np.concatenate(images) if len(images) > 1 else images[0]
    y = np.concatenate(labels) if len(labels) > 1 else labels[0]
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise MwtError(f"{where} has labels outside 0..{k - 1} (from {y.min()} to {y.max()}); "
                       "download the dataset again")
    return np.ascontiguousarray(x), y, classes


def _cifar_needed(variant: str, split: str) -> list[str]:
    layout = CIFAR_LAYOUT[variant]
    return [layout["meta"], *layout[split]]


def cifar_dir_complete(directory: PathLike, variant: str, split: str) -> bool:
    d = Path(directory)
    return all((d / f).is_file() for f in _cifar_needed(variant, split))


def _read_from_tar(archive: Path, names: Sequence[str]) -> dict[str, bytes]:
    wanted = set(names)
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tf:
            for member in tf:  # one sequential pass: a .tar.gz cannot seek backwards cheaply
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted and base not in out:
                    fh = tf.extractfile(member)
                    if fh is not None:
                        out[base] = fh.read()
                    if len(out) == len(wanted):
                        break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise MwtError(f"{archive} is not a readable tar archive ({exc}); delete it and "
                       "download it again") from exc
    missing = sorted(wanted - out.keys())
    if missing:
        raise MwtError(f"{archive} lacks {', '.join(missing)}; delete it and download it again")
    return out


def read_cifar(
    source: PathLike, variant: str = "cifar10", split: str = "train"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read CIFAR-10 (``variant="cifar10"``) or CIFAR-100 (``"cifar100"``, fine labels).

    ``source`` is the extracted batch directory (``cifar-10-batches-py`` / ``cifar-100-python``)
    or the official ``.tar.gz`` archive.  Returns uint8 images ``[N, 3, 32, 32]``, int64 labels
    and the class names from the meta file.
    """
    if variant not in CIFAR_LAYOUT:
        raise MwtError(f"unknown CIFAR variant {variant!r}; use 'cifar10' or 'cifar100'")
    if split not in ("train", "test"):
        raise MwtError(f"unknown split {split!r} for {variant}; use 'train' or 'test'")
    src = Path(source)
    names = _cifar_needed(variant, split)
    if src.is_dir():
        missing = [n for n in names if not (src / n).is_file()]
        if missing:
            raise MwtError(f"{src} lacks {', '.join(missing)}; download the dataset again")
        files = {n: _read_bytes(src / n)[0] for n in names}
    elif src.is_file():
        files = _read_from_tar(src, names)
    else:
        raise MwtError(f"{src} does not exist; download the dataset first")
    return read_cifar_batches(files, variant, split, str(src))


# -------------------------------------------------------------------------------------- SVHN


def read_svhn(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN cropped-digits ``.mat`` file (``X`` [32, 32, 3, n], ``y`` [n, 1]).

    Returns uint8 images ``[n, 3, 32, 32]`` and int64 labels 0..9: the file labels the digits
    1..9 as themselves and the digit zero as 10, which becomes 0.  Any other label, or labels
    that do not match the images, raise :class:`~mwt.errors.MwtError`.
    """
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "y"))
    except Exception as exc:  # scipy raises many kinds of errors on truncated or garbage files
        raise MwtError(f"{path} is not a readable SVHN .mat file ({type(exc).__name__}: {exc}); "
                       "download it again") from exc
    if "X" not in mat or "y" not in mat:
        raise MwtError(f"{path} lacks the 'X' or 'y' variable of an SVHN file; download it again")
    x, y_raw = np.asarray(mat["X"]), np.asarray(mat["y"])
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise MwtError(f"{path} holds X of shape {x.shape} and dtype {x.dtype}, not uint8 "
                       "[32, 32, 3, n]; download it again")
    n = x.shape[3]
    if y_raw.size != n or y_raw.ndim > 2 or (y_raw.ndim == 2 and 1 not in y_raw.shape):
        raise MwtError(f"{path} holds {n} images but labels y of shape {y_raw.shape}, not "
                       f"[{n}, 1]; download it again")
    y = y_raw.reshape(-1)
    if n and not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) \
                or not np.all(y == np.round(y)):
            raise MwtError(f"{path} holds labels of dtype {y.dtype} that are not whole numbers; "
                           "download it again")
    y = y.astype(np.int64)
    bad = (y < 1) | (y > 10)
    if bad.any():
        raise MwtError(f"{path} holds {int(bad.sum())} labels outside 1..10 (e.g. "
                       f"{int(y[bad][0])}), which SVHN never uses; download it again")
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))
    labels = np.where(y == 10, 0, y)
    return images, labels
