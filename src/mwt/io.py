"""Files that never lose work: atomic, pickle-free, checksummed, locked.

- Every write goes to a temporary file in the target directory (named ``.mwt-tmp-*``) and is then
  renamed over the target, so an interrupted command never leaves a half-written file in place of
  a good one; temporaries left by a killed command are removed by the next one
  (:func:`remove_stale_temps`). Files get the permissions the user's umask gives.
- Tensors are safetensors, everything else JSON. A tensor file's header carries the SHA-256 of its
  tensor data, and the JSON beside it the SHA-256 of the whole file, so a flipped bit or a JSON
  from another file is a clear error on load, never silently wrong weights.
- :func:`lock_directory` holds an exclusive ``flock`` on a run directory for a whole command.
- Any ``OSError`` (read-only directory, full disk) becomes one sentence naming the path.
"""

import contextlib
import csv
import errno
import fcntl
import hashlib
import io
import json
import os
import secrets
import struct
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from mwt.errors import CheckpointError, MwtError

TEMP_PREFIX = ".mwt-tmp-"
_TEMP_STEM = 40  # characters of the target's name kept in a temporary name: within NAME_MAX
LOCK_FILE = ".mwt.lock"
DATA_SHA = "sha256_data"  # safetensors header key: SHA-256 of the tensor data section


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def os_error(path, exc: OSError, doing: str = "write") -> MwtError:
    """One sentence for a failed file operation."""
    if exc.errno == errno.ENOSPC:
        why = "the disk is full"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "permission denied" if exc.errno != errno.EROFS else "the file system is read-only"
    elif exc.errno == errno.EISDIR:
        why = "it is a directory"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        why = "a file stands where a directory is needed"
    else:
        why = exc.strerror or exc.__class__.__name__
    return MwtError(f"cannot {doing} {path}: {why}")


def make_dir(path) -> Path:
    """``mkdir -p`` with a one-sentence error (a file in the way, no permission...)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MwtError(f"{path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(path, exc, "create the directory") from exc
    return path


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    make_dir(path.parent)
    if path.is_dir():
        raise MwtError(f"cannot write {path}: it is a directory")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent,
                                   prefix=f"{TEMP_PREFIX}{path.name[:_TEMP_STEM]}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; follow the umask like open()
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise os_error(path, exc) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def temp_path(path, suffix: str = "") -> Path:
    """A fresh temporary name beside ``path`` for a writer that opens the file itself (the
    exporters): short whatever ``path``'s length (a 255-byte name plus our prefix would pass
    NAME_MAX), ending in ``suffix`` (torch's archive writers need a stem and an extension)."""
    path = Path(path)
    return path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(6)}{suffix}")


def check_new_file(path, force: bool = False, what: str = "output file") -> Path:
    """Fail early unless ``path`` names a file we may create or replace: not a directory (nor a
    name ending in a slash), not an existing FIFO, device or socket (never replaced, even with
    ``force``), not an existing regular file unless ``force``, a name within the file system's
    limit, in a directory we can write. Nothing is created."""
    text = str(path)
    if text.strip() == "":
        raise MwtError(f"the {what} must not be empty")
    if text.endswith(("/", os.sep)):
        raise MwtError(f"{text} ends with a slash, so it names a directory; give a file name")
    path = Path(path)
    limit = _name_max(path.parent)
    if len(os.fsencode(path.name)) > limit:  # before any stat, which would fail on it
        raise MwtError(f"the file name of {path} is {len(os.fsencode(path.name))} bytes long; "
                       f"this file system allows {limit}")
    if path.is_dir():
        raise MwtError(f"{path} is a directory; give a file name")
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise MwtError(f"{path} exists and is not a regular file (a FIFO, device, socket "
                           "or broken link); mwt only replaces regular files")
        if not force:
            raise MwtError(f"{path} already exists; pass --force to replace it")
    check_creatable(path.parent)
    return path


def _name_max(directory: Path) -> int:
    probe = directory
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        return os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def remove_stale_temps(directory) -> list[Path]:
    """Delete the temporary files a killed write of ours left in ``directory``."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for p in directory.glob(f"{TEMP_PREFIX}*"):
        if p.is_file() and not p.is_symlink():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def check_writable(directory) -> Path:
    """Fail early, before any expensive work, if ``directory`` cannot be created or written."""
    directory = make_dir(directory)
    try:  # a real probe: os.access says yes to root on a read-only mount
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f"{TEMP_PREFIX}probe.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise os_error(directory, exc, "write in") from exc
    return directory


def check_creatable(path) -> None:
    """Fail early unless ``path`` could be created: its nearest existing ancestor is a directory
    we can write in (nothing is created)."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise MwtError(f"cannot create {path}: {probe} is a file")
    check_writable(probe)


# ---------------------------------------------------------------------------------- JSON


def write_json(path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_csv(path, columns: list[str], rows: list[dict]) -> None:
    """``rows`` as CSV with a header of ``columns`` (in that order), written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


def write_json_lines(path, records: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True) + "\n"
                                     for r in records).encode())


def read_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        obj = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc.__class__.__name__}); "
                              "the file is corrupted or of the wrong kind") from exc
    except OSError as exc:
        raise os_error(path, exc, "read") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return obj


# --------------------------------------------------------------------------- safetensors


def _data_section(raw: bytes) -> bytes:
    (n,) = struct.unpack("<Q", raw[:8])
    return raw[8 + n:]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_tensors(path, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> str:
    """Write a safetensors file whose header carries the SHA-256 of its tensor data; returns the
    SHA-256 of the whole file (for the JSON that describes it)."""
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    # The data section does not depend on the header, so hash it from a first serialisation.
    digest = sha256(_data_section(st_save(flat)))
    raw = st_save(flat, metadata={**(metadata or {}), DATA_SHA: digest})
    atomic_write_bytes(path, raw)
    return sha256(raw)


def _read_raw(path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise os_error(path, exc, "read") from exc


def _parse(raw: bytes, path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        tensors = st_load(raw)
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        meta = header.get("__metadata__") or {}
        if not isinstance(meta, dict):
            raise ValueError("bad metadata")
    except (SafetensorError, ValueError, RuntimeError, struct.error, UnicodeDecodeError,
            OverflowError, MemoryError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file; it is corrupted, "
                              "truncated or of the wrong kind") from exc
    expected = meta.get(DATA_SHA)
    if expected is not None and sha256(_data_section(raw)) != expected:
        raise CheckpointError(f"{path} is corrupted: its tensor data does not match the checksum "
                              "in its header")
    return tensors, {str(k): str(v) for k, v in meta.items()}


def load_tensors(path) -> dict[str, torch.Tensor]:
    return _parse(_read_raw(path), path)[0]


def load_tensors_and_metadata(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the header's string metadata of a safetensors file, checksum verified."""
    return _parse(_read_raw(path), path)


def write_artifact(directory, name: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """``<name>.safetensors`` then ``<name>.json`` (with the tensor file's SHA-256) in
    ``directory``: the two halves of a saved module set or module."""
    directory = Path(directory)
    digest = save_tensors(directory / f"{name}.safetensors", tensors,
                          metadata={"format": str(meta.get("format", ""))})
    write_json(directory / f"{name}.json", {**meta, "sha256": digest})


def read_artifact(directory, name: str, fmt: str, what: str):
    """``<name>.json`` (checked to be of format ``fmt``) and the tensors of ``<name>.safetensors``
    from ``directory``, checked against the JSON's SHA-256."""
    directory = Path(directory)
    meta_path = directory / f"{name}.json"
    meta = read_json(meta_path)
    if meta.get("format") != fmt:
        raise CheckpointError(f"{meta_path} is not a torch-mwt {what}")
    tensor_path = directory / f"{name}.safetensors"
    raw = _read_raw(tensor_path)
    digest = meta.get("sha256")
    if digest is not None and sha256(raw) != digest:
        raise CheckpointError(f"{tensor_path} is corrupted or does not belong to {meta_path}: "
                              "its SHA-256 does not match")
    return meta, _parse(raw, tensor_path)[0]


# -------------------------------------------------------------------------------- locks


_HELD: dict[Path, int] = {}  # directories this process has locked, with nesting depth


@contextlib.contextmanager
def lock_directory(directory, command: str = "another mwt command"):
    """Hold an exclusive lock on ``directory`` (created if needed) while the block runs.

    A second command on the same directory fails at once with a clear error instead of both
    writing into it. The lock is re-entrant within one process (the demo trains a run and then
    modularizes it) and released when the process ends, however it ends.
    """
    directory = make_dir(directory)
    key = directory.resolve()
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield directory
        finally:
            _HELD[key] -= 1
        return
    path = directory / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
    except OSError as exc:
        raise os_error(directory, exc, "lock") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise MwtError(f"{directory} is in use by another mwt command (it holds the lock "
                           f"{LOCK_FILE}); wait for it to finish") from exc
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {command}\n".encode())
        _HELD[key] = 1
        try:
            yield directory
        finally:
            del _HELD[key]
    finally:
        os.close(fd)  # closing releases the flock


def is_locked(directory) -> bool:
    """Whether another process holds :func:`lock_directory` on ``directory`` now."""
    path = Path(directory) / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
