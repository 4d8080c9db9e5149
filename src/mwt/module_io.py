"""Shipping modules: safetensors + JSON, never pickle; TorchScript / ONNX export.

A saved module is its weights (``module.safetensors``) and a JSON description (``module.json``):
which registered model it was cut from, which kernels it keeps and how its gates were treated.
Loading rebuilds that structure from the description and fills in the weights, so a module file
from a stranger can never run code.
"""

import importlib.util
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from mwt.errors import CheckpointError, MwtError
from mwt.extract import extract_module
from mwt.io import read_artifact, save_tensors, write_json
from mwt.reuse import ReusedModule

FORMAT = "mwt-module/1"


def _parts(module: nn.Module):
    """(extracted graph module, head classes or None) of a module we can describe."""
    if isinstance(module, ReusedModule):
        return module.module, module.classes
    if "mwt_module" in getattr(module, "meta", {}):
        return module, None
    raise MwtError("save_module takes a module from mwt.extract_module or mwt.reuse")


def save_module(module: nn.Module, path, input_shape=None, extra: dict | None = None) -> Path:
    """Write ``module.safetensors`` + ``module.json`` into directory ``path``."""
    graph_module, head = _parts(module)
    info = graph_module.meta["mwt_module"]
    base = graph_module.meta.get("mwt_config") or {}
    if not base.get("name"):
        raise MwtError("only modules of registered models can be saved as files; for your own "
                       "CNN save module.state_dict() and rebuild it with mwt.extract_module")
    shape = input_shape or getattr(module, "input_shape", None)
    description = {
        "format": FORMAT,
        "base": {k: base[k] for k in ("name", "num_classes", "in_channels", "width")},
        "kernels": info["kernels"], "total_kernels": info["total_kernels"],
        "keep_gates": info["keep_gates"], "fold_gates": info["fold_gates"],
        "head_classes": head, "input_shape": list(shape) if shape else None,
        "report": _jsonable(getattr(module, "report", {})), **(extra or {}),
    }
    path = Path(path)
    save_tensors(path / "module.safetensors", module.state_dict(),
                 metadata={"format": FORMAT})
    write_json(path / "module.json", description)
    return path


def _jsonable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "history"}


def load_module(path) -> nn.Module:
    """Rebuild a saved module (eval mode) from ``module.json`` and ``module.safetensors``."""
    from mwt.gates import make_modular
    from mwt.models import create_model

    path = Path(path)
    meta, state = read_artifact(path, "module", FORMAT, "module description")
    try:
        base = meta["base"]
        total = int(meta["total_kernels"])
        kernels = torch.zeros(total, dtype=torch.bool)
        kernels[torch.tensor([int(i) for i in meta["kernels"]], dtype=torch.long)] = True
        modular = make_modular(create_model(base["name"], int(base["num_classes"]),
                                            int(base["in_channels"]), float(base["width"])))
        module = extract_module(modular, kernels, keep_gates=bool(meta["keep_gates"]))
        module.meta["mwt_module"]["fold_gates"] = bool(meta["fold_gates"])
        if meta.get("head_classes") is not None:
            module = ReusedModule(module, int(base["num_classes"]),
                                  [int(c) for c in meta["head_classes"]])
        module.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError, MwtError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} does not hold a consistent module ({reason})") from exc
    module.input_shape = tuple(meta["input_shape"]) if meta.get("input_shape") else None
    module.report = meta.get("report", {})
    return module.eval()


def export_module(module: nn.Module, path, fmt: str = "torchscript", input_shape=None) -> Path:
    """Export to a file that runs with plain PyTorch (TorchScript) or any ONNX runtime."""
    shape = input_shape or getattr(module, "input_shape", None)
    if not shape:
        raise MwtError("the module's input shape is unknown; pass input_shape=(C, H, W)")
    example = torch.zeros((1, *shape), device=next(module.parameters()).device)
    module = module.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt not in ("torchscript", "onnx"):
        raise MwtError(f"unknown export format {fmt!r}; use torchscript or onnx")
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise MwtError("ONNX export needs the onnx package: pip install 'torch-mwt[export]'")
    try:
        with warnings.catch_warnings():
            # Both exporters handle these plain graphs; their deprecation notices are noise here.
            warnings.simplefilter("ignore", DeprecationWarning)
            if fmt == "torchscript":
                with torch.no_grad():
                    torch.jit.save(torch.jit.trace(module, example), str(tmp))
            else:
                torch.onnx.export(module, (example,), str(tmp), dynamo=False,
                                  input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
