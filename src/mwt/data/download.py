"""Download the official dataset files with urllib (no third-party client).

Each file is streamed into a temporary file in the destination directory; its size and SHA-256
(and MD5) are checked against the official values, and only then is it moved into place with
``os.replace`` -- an interrupted or corrupted download never leaves a partial file under the
real name.  Archives (CIFAR) are downloaded under a temporary name and extracted member by member
into a temporary directory, refusing absolute paths, ``..`` components, links and device files;
only the dataset's own folder is then moved into place, and never over an existing one: torch-mwt
does not delete a directory it did not create.

What is fetched comes from the specs of :mod:`mwt.data.builtin` (as :data:`SOURCES`); this module
does not use the registry, whose loaders call it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from mwt.data.builtin import BUILTIN_DATASETS
from mwt.data.spec import DatasetSpec, OfficialFile
from mwt.errors import MwtError

__all__ = ["download", "cache_dir", "SOURCES", "OfficialFile", "safe_extract"]


def _source(spec: DatasetSpec) -> dict:
    return {
        "base_url": spec.urls[0],
        "fallback_urls": list(spec.urls[1:]),
        "files": {split: list(files) for split, files in spec.files.items()},
        "extract_to": spec.extract_to,
    }


# Canonical name -> base URL (then fallback URLs, tried only when the previous server cannot be
# reached), per-split list of official files, and the folder an archive must hold (None: no
# archive).  Built from the specs of mwt.data.builtin; tests and mirrors may patch an entry.
SOURCES: dict[str, dict] = {
    spec.name: _source(spec) for spec in BUILTIN_DATASETS if spec.urls
}

_CHUNK = 1 << 20


class _Unreachable(MwtError):
    """The server could not be reached or broke off (a fallback URL may still work)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def cache_dir(name: str) -> Path:
    """Default download directory of a dataset: ``~/.cache/mwt/<name>``."""
    return Path.home() / ".cache" / "mwt" / name


def _md5_new():
    try:
        return hashlib.md5(usedforsecurity=False)
    except TypeError:  # pragma: no cover - very old OpenSSL builds
        return hashlib.md5()


def _official(entry) -> OfficialFile:
    """An :class:`OfficialFile` from a SOURCES entry; ``(name, digest)`` pairs are accepted too
    (a 32-digit digest is an MD5, a 64-digit one a SHA-256)."""
    if isinstance(entry, OfficialFile):
        return entry
    name, digest = entry
    if digest is not None and len(digest) == 32:
        return OfficialFile(name, None, None, digest)
    return OfficialFile(name, digest)


def _fetch(url: str, dest: Path, official: OfficialFile | None, progress: bool, timeout: float,
           label: str | None = None) -> None:
    """Stream ``url`` to ``dest`` atomically; refuse it unless it matches ``official``."""
    label = label or dest.name
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{label}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise MwtError(f"cannot write into the download directory {dest.parent} "
                       f"({exc.strerror or exc}); pass another data dir") from exc
    tmp = Path(tmp_name)
    try:
        sha256, md5 = hashlib.sha256(), _md5_new()
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

                    bar = tqdm(total=total, unit="B", unit_scale=True, desc=label,
                               disable=None, leave=False)
                try:
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                        sha256.update(chunk)
                        md5.update(chunk)
                        received += len(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                finally:
                    if bar is not None:
                        bar.close()
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            if isinstance(exc, http.client.IncompleteRead):
                reason = "the connection closed before the whole file arrived"
            raise _Unreachable(
                f"could not download {url} ({reason}); check the network, or fetch the file by "
                f"hand into {dest.parent}", f"{url}: {reason}"
            ) from exc
        if total is not None and received != total:
            raise _Unreachable(
                f"the download of {url} stopped after {received} of {total} bytes, so nothing was "
                "kept; try again", f"{url}: stopped after {received} of {total} bytes"
            )
        _verify(url, official, received, sha256.hexdigest(), md5.hexdigest())
        os.replace(tmp, dest)
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _verify(url: str, official: OfficialFile | None, size: int, sha256: str, md5: str) -> None:
    if official is None:
        return
    why = ("so it was corrupted in transit or changed on the server and was not kept; try again "
           "(or pass verify=False for a mirror that serves other bytes)")
    if official.size is not None and size != official.size:
        raise MwtError(f"downloaded {url} is {size} bytes instead of the official "
                       f"{official.size}, {why}")
    if official.sha256 is not None and sha256 != official.sha256.lower():
        raise MwtError(f"downloaded {url} has SHA-256 {sha256} instead of the official "
                       f"{official.sha256}, {why}")
    if official.md5 is not None and md5 != official.md5.lower():
        raise MwtError(f"downloaded {url} has MD5 {md5} instead of the official {official.md5}, "
                       f"{why}")


def _fetch_any(bases: list[str], official: OfficialFile, dest: Path, verify: bool,
               progress: bool, timeout: float, label: str) -> None:
    """Fetch ``official`` from the first of ``bases`` that answers (each one is verified)."""
    failures: list[_Unreachable] = []
    for base in bases:
        try:
            _fetch(base + official.name, dest, official if verify else None, progress, timeout,
                   label)
            return
        except _Unreachable as exc:
            failures.append(exc)
    if len(failures) == 1:
        raise failures[0]
    reasons = "; ".join(f.reason for f in failures)
    raise MwtError(f"could not download {official.name} from any server ({reasons}); check the "
                   f"network, or fetch the file by hand into {dest.parent}") from failures[-1]


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
        raise MwtError(f"refused to extract {archive}: member {name!r} would be written outside "
                       "the target directory; the archive is corrupted or malicious")
    if not (member.isfile() or member.isdir()):
        raise MwtError(f"refused to extract {archive}: member {name!r} is a link or special "
                       "file, which the official archive never contains")
    return path


def _occupied(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _already_there(path: Path) -> MwtError:
    return MwtError(f"{path} already exists, and torch-mwt never deletes what it did not create; "
                    "move or delete it yourself, then extract or download again")


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike,
                 expected: str | None = None) -> list[Path]:
    """Extract a tar archive into ``target`` safely; returns the top-level entries created.

    Members are checked (regular files and directories only, no absolute paths, no ``..``) and
    written one by one into a temporary directory beside ``target``; only when the whole archive
    was read are the results moved into ``target``.  With ``expected`` (e.g.
    ``"cifar-10-batches-py"``) only that top-level entry is extracted and moved, and the archive
    must contain it; without it every top-level entry is.  Nothing already in ``target`` is ever
    replaced or deleted: if a destination exists, :class:`~mwt.errors.MwtError` is raised and
    ``target`` is left as it was.
    """
    archive, target = Path(archive), Path(target)
    if expected is not None and (not expected or expected in (".", "..")
                                 or "/" in expected or "\\" in expected):
        raise MwtError(f"safe_extract expected must be a plain file or folder name, got "
                       f"{expected!r}")
    if expected is not None and _occupied(target / expected):
        raise _already_there(target / expected)
    try:
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
    except OSError as exc:
        raise MwtError(f"cannot extract into {target} ({exc.strerror or exc}); pass another "
                       "directory") from exc
    try:
        try:
            with tarfile.open(archive, "r:*") as tf:
                for member in tf:
                    rel = _safe_member_path(member, archive)  # every member is checked
                    if expected is not None and rel.parts[0] != expected:
                        continue
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
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise MwtError(f"could not extract {archive} ({exc}); delete it and download it "
                           "again") from exc
        if expected is not None:
            if not _occupied(staging / expected):
                raise MwtError(f"{archive} does not contain {expected}, so it is not the "
                               "expected archive; delete it and download it again")
            entries = [staging / expected]
        else:
            entries = sorted(staging.iterdir())
        for entry in entries:  # check them all before moving any
            if _occupied(target / entry.name):
                raise _already_there(target / entry.name)
        created = []
        for entry in entries:
            final = target / entry.name
            if _occupied(final):  # appeared meanwhile
                raise _already_there(final)
            try:
                os.rename(entry, final)
            except OSError as exc:
                raise MwtError(f"could not move the extracted {entry.name} to {final} "
                               f"({exc.strerror or exc})") from exc
            created.append(final)
        return created
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _canonical(name: str) -> str:
    """The :data:`SOURCES` key for ``name`` (case-insensitive, a built-in alias resolved)."""
    key = str(name).strip().lower()
    key = next((spec.name for spec in BUILTIN_DATASETS if key in spec.aliases), key)
    if key not in SOURCES:
        raise MwtError(f"dataset {name!r} cannot be downloaded; downloadable datasets: "
                       f"{', '.join(sorted(SOURCES))}")
    return key


def download(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    splits: str | Iterable[str] | None = None,
    base_url: str | None = None,
    verify: bool | None = None,
    check_md5: bool | None = None,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download the official files of dataset ``name`` into ``data_dir``; returns that directory.

    ``name`` is a key of :data:`SOURCES` (a built-in dataset's canonical name) or a built-in alias,
    in any case.  ``data_dir`` defaults to ``~/.cache/mwt/<name>``.  ``splits`` limits the files to
    those splits (a name or a list; default: all).  ``base_url`` replaces the official server (the
    file names are appended to it).  Every file's size, SHA-256 and MD5 are compared with the
    official values and a file that differs is refused; ``verify=False`` skips that (for mirrors
    serving other bytes; ``check_md5`` is the older name of ``verify``).  ``force`` re-downloads
    files already present; an archive's folder (``cifar-10-batches-py``) is never deleted, so with
    ``force`` an existing one is an error.  CIFAR archives are extracted safely and then deleted.
    Raises :class:`~mwt.errors.MwtError` on any failure, leaving no partial file behind.
    """
    if verify is not None and check_md5 is not None and bool(verify) != bool(check_md5):
        raise MwtError("download got verify and check_md5 (its older name) with different "
                       "values; pass only verify")
    verify = bool(verify if verify is not None else check_md5 if check_md5 is not None else True)
    canon = _canonical(name)
    source = SOURCES[canon]
    target = Path(data_dir).expanduser() if data_dir is not None else cache_dir(canon)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MwtError(f"cannot create the download directory {target} ({exc.strerror}); pass "
                       "another data dir") from exc
    if splits is None:
        wanted = list(source["files"])
    elif isinstance(splits, str):
        wanted = [splits.strip().lower()]
    else:
        wanted = [str(s).strip().lower() for s in splits]
    for split in wanted:
        if split not in source["files"]:
            raise MwtError(f"unknown split {split!r} for {canon}; use "
                           f"{' or '.join(repr(s) for s in source['files'])}")
    if base_url is not None:
        bases = [base_url]
    else:
        bases = [source["base_url"], *source.get("fallback_urls", ())]
    bases = [b if b.endswith("/") else b + "/" for b in bases]
    folder = source["extract_to"]
    seen: set[str] = set()
    for split in wanted:
        for entry in source["files"][split]:
            official = _official(entry)
            if official.name in seen:
                continue
            seen.add(official.name)
            done = target / (folder if folder else official.name)
            if done.exists() and not force:
                continue
            if not folder:
                _fetch_any(bases, official, done, verify, progress, timeout, official.name)
                continue
            if _occupied(done):  # force=True, but the folder may hold the user's files
                raise _already_there(done)
            # The archive goes under a name of our own, so a user's copy is never touched.
            try:
                fd, tmp_name = tempfile.mkstemp(prefix=f".{official.name}.",
                                                suffix=".download", dir=target)
            except OSError as exc:
                raise MwtError(f"cannot write into the download directory {target} "
                               f"({exc.strerror or exc}); pass another data dir") from exc
            os.close(fd)
            archive = Path(tmp_name)
            try:
                _fetch_any(bases, official, archive, verify, progress, timeout, official.name)
                safe_extract(archive, target, expected=folder)
            finally:
                archive.unlink(missing_ok=True)
    return target
