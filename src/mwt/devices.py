"""Which device a command runs on: the one asked for, if this torch can run on it here.

``torch.device`` accepts any name torch knows ("meta", "mps", "xla", "hpu" ...), whether or not
this build and machine can run on it; the first tensor moved there then fails deep inside
training with a torch traceback. Every command resolves its ``--device`` here first, so a device
that cannot run is one sentence before any work starts.
"""

import torch

from mwt.errors import MwtError


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_devices() -> list[str]:
    """The device types this torch can run mwt on, here and now."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        found.append("xpu")
    return found


def _count(kind: str) -> int:
    if kind == "cuda":
        return torch.cuda.device_count()
    if kind == "xpu":
        return torch.xpu.device_count()
    return 1


def resolve_device(device=None) -> torch.device:
    """The device to run on: as asked, else CUDA when present, else the CPU; a device this
    torch cannot run on here is an :class:`MwtError` naming the ones it can."""
    if device is None:
        return default_device()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MwtError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from exc
    usable = available_devices()
    if device.type == "cuda" and "cuda" not in usable:
        raise MwtError("device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if device.type not in usable:
        raise MwtError(f"device {device} cannot run mwt here; this torch can use "
                       f"{', '.join(usable)}")
    if device.index is not None and device.type != "cpu" and device.index >= _count(device.type):
        raise MwtError(f"device {device} does not exist; this machine has {_count(device.type)} "
                       f"{device.type} device(s) ({device.type}:0 ...)")
    return device


__all__ = ["available_devices", "default_device", "resolve_device"]
