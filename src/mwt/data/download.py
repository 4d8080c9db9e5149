"""Download the official dataset files with urllib (no third-party client).

Each file is streamed into a temporary file in the destination directory, its MD5 checked
against the official value where one is known, and only then moved into place with
``os.replace`` -- an interrupted or corrupted download never leaves a partial file under the
real name.  Archives (CIFAR) are extracted member by member into a temporary directory, refusing
absolute paths, ``..`` components, links and device files, and the result is moved into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from mwt.errors import MwtError

__all__ = ["download", "cache_dir", "SOURCES", "safe_extract"]

_FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"
_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"

# name -> base URL, per-split list of (file name, official md5 or None), archive handling.
SOURCES: dict[str, dict] = {
    "fashion-mnist": {
        "base_url": _FMNIST_URL,
        "files": {
            "train": [
                ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ],
            "test": [
                ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
            ],
        },
        "extract_to": None,
    },
    "cifar10": {
        "base_url": _CIFAR_URL,
        "files": {
            "train": [("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")],
            "test": [("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")],
        },
        "extract_to": "cifar-10-batches-py",
    },
    "cifar100": {
        "base_url": _CIFAR_URL,
        "files": {
            "train": [("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")],
            "test": [("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")],
        },
        "extract_to": "cifar-100-python",
    },
    "svhn": {
        "base_url": _SVHN_URL,
        "files": {
            "train": [("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373")],
            "test": [("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3")],
        },
        "extract_to": None,
    },
}

_CHUNK = 1 << 20


def cache_dir(name: str) -> Path:
    """Default download directory of a dataset: ``~/.cache/mwt/<name>``."""
    return Path.home() / ".cache" / "mwt" / name


def _md5_new():
    try:
        return hashlib.md5(usedforsecurity=False)
    except TypeError:  # pragma: no cover - very old OpenSSL builds
        return hashlib.md5()


def _fetch(url: str, dest: Path, md5: str | None, progress: bool, timeout: float) -> None:
    """Stream ``url`` to ``dest`` atomically, checking ``md5`` when given."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = _md5_new()
        received = 0
        request = urllib.request.Request(url, headers={"User-Agent": "torch-mwt"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp, \
                    os.fdopen(fd, "wb") as out:
                fd = -1
                total = resp.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                bar = None
                if progress:
                    from tqdm import tqdm

                    bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                               disable=None, leave=False)
                try:
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                finally:
                    if bar is not None:
                        bar.close()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise MwtError(
                f"Could not download {url} ({reason}); check the network, or fetch the file by "
                f"hand into {dest.parent}."
            ) from exc
        if total is not None and received != total:
            raise MwtError(
                f"Download of {url} stopped after {received} of {total} bytes, so nothing was "
                "kept; try again."
            )
        if md5 is not None and digest.hexdigest() != md5:
            raise MwtError(
                f"Downloaded {url} has MD5 {digest.hexdigest()} instead of the official {md5}, "
                "so it was corrupted in transit or changed on the server and was not kept; "
                "try again."
            )
        os.replace(tmp, dest)
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _safe_member_path(member: tarfile.TarInfo, archive: Path) -> PurePosixPath:
    name = member.name
    path = PurePosixPath(name)
    if (
        not name
        or name.startswith(("/", "\\"))
        or path.is_absolute()
        or (len(name) > 1 and name[1] == ":")  # Windows drive letter
        or any(part == ".." for part in path.parts)
        or "\\" in name
    ):
        raise MwtError(f"Refused to extract {archive}: member {name!r} would be written outside "
                       "the target directory; the archive is corrupted or malicious.")
    if not (member.isfile() or member.isdir()):
        raise MwtError(f"Refused to extract {archive}: member {name!r} is a link or special "
                       "file, which the official archive never contains.")
    return path


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> list[Path]:
    """Extract a tar archive into ``target`` safely; returns the top-level entries created.

    Members are written one by one (regular files and directories only, no absolute paths, no
    ``..``) into a temporary directory beside ``target``; only when the whole archive was read
    are the top-level entries moved into ``target`` (replacing same-named ones).
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
    try:
        try:
            with tarfile.open(archive, "r:*") as tf:
                for member in tf:
                    rel = _safe_member_path(member, archive)
                    dest = staging.joinpath(*rel.parts)
                    if member.isdir():
                        dest.mkdir(parents=True, exist_ok=True)
                        continue
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(member)
                    if src is None:  # pragma: no cover - isfile() members always have data
                        continue
                    with src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, _CHUNK)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise MwtError(f"Could not extract {archive} ({exc}); delete it and download it "
                           "again.") from exc
        created = []
        for entry in sorted(staging.iterdir()):
            final = target / entry.name
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            elif final.exists() or final.is_symlink():
                final.unlink()
            os.replace(entry, final)
            created.append(final)
        return created
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _canonical(name: str) -> str:
    from mwt.data.registry import canonical_name

    canon = canonical_name(name)
    if canon not in SOURCES:
        raise MwtError(f"Dataset {name!r} cannot be downloaded; downloadable ones are "
                       f"{', '.join(sorted(SOURCES))}.")
    return canon


def download(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    splits: Iterable[str] | None = None,
    base_url: str | None = None,
    check_md5: bool = True,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download the official files of dataset ``name`` into ``data_dir``; returns that directory.

    ``data_dir`` defaults to ``~/.cache/mwt/<name>``.  ``splits`` limits the files to those
    splits (default: all).  ``base_url`` replaces the official server (the file names are
    appended to it), ``check_md5=False`` skips the MD5 comparison (for mirrors serving other
    bytes), ``force`` re-downloads files already present.  CIFAR archives are extracted safely
    and then deleted.  Raises :class:`~mwt.errors.MwtError` on any failure, leaving no partial
    file behind.
    """
    canon = _canonical(name)
    source = SOURCES[canon]
    target = Path(data_dir).expanduser() if data_dir is not None else cache_dir(canon)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MwtError(f"Cannot create the download directory {target} ({exc.strerror}); pass "
                       "another data dir.") from exc
    wanted = list(source["files"]) if splits is None else [s.lower() for s in splits]
    base = base_url if base_url is not None else source["base_url"]
    if not base.endswith("/"):
        base += "/"
    seen: set[str] = set()
    for split in wanted:
        if split not in source["files"]:
            raise MwtError(f"Unknown split {split!r} for {canon}; use one of "
                           f"{', '.join(source['files'])}.")
        for fname, md5 in source["files"][split]:
            if fname in seen:
                continue
            seen.add(fname)
            folder = source["extract_to"]
            done = target / (folder if folder else fname)
            if done.exists() and not force:
                continue
            dest = target / fname
            _fetch(base + fname, dest, md5 if check_md5 else None, progress, timeout)
            if folder:
                try:
                    safe_extract(dest, target)
                finally:
                    dest.unlink(missing_ok=True)
    return target
