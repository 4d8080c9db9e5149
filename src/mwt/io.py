"""Atomic, pickle-free files: safetensors for tensors, JSON for everything else.

Every write goes to a temporary file in the target directory and is then renamed over the target,
so an interrupted run never leaves a half-written file in place of a good one.
"""

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from mwt.errors import CheckpointError


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        obj = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc.__class__.__name__}); "
                              "the file is corrupted or of the wrong kind") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return obj


def save_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(flat, metadata=metadata))


def load_tensors(path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return st_load(path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); "
                              "it is corrupted, truncated or of the wrong kind") from exc


def read_artifact(directory, name: str, fmt: str, what: str):
    """``<name>.json`` (checked to be of format ``fmt``) and the tensors of ``<name>.safetensors``
    from ``directory``: the two halves of a saved module set or module."""
    directory = Path(directory)
    meta = read_json(directory / f"{name}.json")
    if meta.get("format") != fmt:
        raise CheckpointError(f"{directory / (name + '.json')} is not a torch-mwt {what}")
    return meta, load_tensors(directory / f"{name}.safetensors")


def read_metadata(path) -> dict[str, str]:
    """The string metadata of a safetensors file's header."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc
