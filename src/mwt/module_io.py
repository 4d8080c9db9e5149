"""Shipping modules: safetensors + JSON, never pickle; TorchScript / ONNX export.

A saved module is its weights (``module.safetensors``) and a JSON description (``module.json``):
which registered model it was cut from, which kernels it keeps and how its gates were treated.
Loading rebuilds that structure from the description and fills in the weights, so a module file
from a stranger can never run code.
"""

import importlib.util
import os
import warnings
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from mwt.checks import is_int
from mwt.errors import CheckpointError, MwtError
from mwt.extract import extract_module
from mwt.inference import fold_batchnorm
from mwt.io import (
    check_creatable,
    check_new_file,
    make_dir,
    os_error,
    read_artifact,
    temp_path,
    umask,
    write_artifact,
)
from mwt.model_info import mwt_info, update_mwt_info
from mwt.models import ModelSpec
from mwt.output_rows import keep_output_rows
from mwt.reuse import ReusedModule

FORMAT = "mwt-module/1"
MODULE_FILES = ("module.json", "module.safetensors")
EXPORT_FORMATS = {"pt2": ".pt2", "onnx": ".onnx", "torchscript": ".pt"}


def _parts(module: nn.Module):
    """(extracted graph module, its composition, head classes or None) of a module we can
    describe: ``"head"`` (a ReusedModule with a new head), ``"rows"`` (a ReusedModule whose
    module keeps the target classes' output rows) or ``"none"`` (an extracted module)."""
    if isinstance(module, ReusedModule):
        composition = module.composition
        return module.module, composition, module.classes if composition == "head" else None
    if mwt_info(module).module is not None:
        return module, "none", None
    raise MwtError("save_module takes a module from mwt.extract_module or mwt.reuse")


def module_input_shape(module: nn.Module) -> tuple[int, ...] | None:
    """One input sample's shape, as recorded when the module was made or loaded."""
    inner = module.module if isinstance(module, ReusedModule) else module
    info = mwt_info(inner).module
    return info.input_shape if info is not None else None


def save_module(module: nn.Module, path, input_shape=None, extra: dict | None = None) -> Path:
    """Write ``module.safetensors`` + ``module.json`` into directory ``path``."""
    graph_module, composition, head = _parts(module)
    info = mwt_info(graph_module)
    if info.spec is None:
        raise MwtError("only modules of registered models can be saved as files; for your own "
                       "CNN save module.state_dict() and rebuild it with mwt.extract_module")
    cut = info.module
    shape = input_shape or module_input_shape(module)
    check_module_out(path)
    description = {
        "format": FORMAT,
        "base": info.spec.to_dict(),
        "kernels": list(cut.kernels), "total_kernels": cut.total_kernels,
        "keep_gates": cut.keep_gates, "fold_gates": cut.fold_gates,
        "head_classes": head, "composition": composition,
        "output_classes": list(cut.output_classes) if cut.output_classes is not None else None,
        "input_shape": list(shape) if shape else None,
        "report": _jsonable(getattr(module, "report", {})), **(extra or {}),
    }
    write_artifact(path, "module", module.state_dict(), description)
    return Path(path)


def check_module_out(path) -> Path:
    """Refuse, before any work, a directory that already holds a module or is not writable."""
    if path is None or str(path).strip() == "":
        raise MwtError("the module directory (--out) must not be empty")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MwtError(f"{path} is a file, not a module directory")
    taken = [name for name in MODULE_FILES if (path / name).exists()]
    if taken:
        raise MwtError(f"{path} already holds a module ({', '.join(taken)}); choose another "
                       "--out")
    check_creatable(path)
    return path


def _jsonable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "history"}


def _fail(path, reason: str) -> CheckpointError:
    return CheckpointError(f"{path} does not hold a consistent module ({reason})")


def _int_list(value, name: str, path, low: int, high: int) -> list[int]:
    if not isinstance(value, list) or not all(is_int(i) for i in value):
        raise _fail(path, f"{name} must be a list of integers")
    if any(not low <= i < high for i in value):
        raise _fail(path, f"{name} must lie in {low}..{high - 1}")
    if len(set(value)) != len(value):
        raise _fail(path, f"{name} has repeated entries")
    return value


def _base_model(meta: dict, path):
    """The registered model a module was cut from, built on the meta device (no memory) so that
    its description can be checked against the weights before anything is allocated."""
    from mwt.gates import count_gated_kernels

    try:
        spec = ModelSpec.from_dict(meta.get("base"))
        with torch.device("meta"):
            skeleton = spec.build()
    except MwtError as exc:
        raise _fail(path, f"its base model cannot be built: {exc}") from exc
    return spec, skeleton, count_gated_kernels(skeleton)


def _check_fits(state: dict, skeleton: torch.nn.Module, path) -> None:
    """Every tensor of the module is a slice of the base model's tensor of the same name."""
    full = skeleton.state_dict()
    for key, tensor in state.items():
        ref = full.get(key)
        if ref is None:
            continue  # gates, scatter indices and the head are checked by load_state_dict
        if tensor.dim() != ref.dim() or any(a > b for a, b in zip(tensor.shape, ref.shape)):
            raise _fail(path, f"tensor {key} of shape {tuple(tensor.shape)} does not fit the "
                              f"base model's {tuple(ref.shape)}; base.width or base.name is "
                              "wrong")


def _input_shape(meta: dict, in_channels: int, path) -> tuple[int, ...] | None:
    shape = meta.get("input_shape")
    if shape is None:
        return None
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(is_int(v) for v in shape)
            or not all(1 <= v <= 4096 for v in shape)):
        raise _fail(path, "input_shape must be [C, H, W] of positive integers")
    if shape[0] != in_channels:
        raise _fail(path, f"input_shape has {shape[0]} channels but the model takes "
                          f"{in_channels}")
    return tuple(shape)


def load_module(path) -> nn.Module:
    """Rebuild a saved module (eval mode) from ``module.json`` and ``module.safetensors``.

    Nothing in the JSON is trusted: the structure is checked against the registered base model
    (built on the meta device first, so a lying file cannot make us allocate much) and against
    the weights, and the tensor file against the JSON's SHA-256.
    """
    from mwt.gates import make_modular

    path = Path(path)
    meta, state = read_artifact(path, "module", FORMAT, "module description")
    spec, skeleton, gated = _base_model(meta, path)
    n, c = spec.num_classes, spec.in_channels
    total = meta.get("total_kernels")
    if total != gated or isinstance(total, bool):
        raise _fail(path, f"total_kernels is {total!r} but its base model has {gated} gated "
                          "kernels")
    kernel_ids = _int_list(meta.get("kernels"), "kernels", path, 0, gated)
    if not kernel_ids:
        raise _fail(path, "it keeps no kernels")
    head = meta.get("head_classes")
    if head is not None:
        head = _int_list(head, "head_classes", path, 0, n)
        if len(head) < 2:
            raise _fail(path, "head_classes needs at least two classes")
    rows = meta.get("output_classes")
    if rows is not None:
        rows = _int_list(rows, "output_classes", path, 0, n)
        if len(rows) < 2:
            raise _fail(path, "output_classes needs at least two classes")
    # Files from before compositions were recorded: a head, or a bare extracted module.
    composition = meta.get("composition", "head" if head is not None else "none")
    wanted = {"head": (True, False), "rows": (False, True), "none": (False, None)}
    if composition not in wanted or (head is not None) != wanted[composition][0] or (
            wanted[composition][1] is not None and (rows is not None) != wanted[composition][1]):
        raise _fail(path, f"its composition {composition!r} does not match its head_classes "
                          "and output_classes")
    flags = {k: meta.get(k) for k in ("keep_gates", "fold_gates")}
    if not all(isinstance(v, bool) for v in flags.values()) or all(flags.values()):
        raise _fail(path, "keep_gates and fold_gates must be true/false, not both true")
    shape = _input_shape(meta, c, path)
    _check_fits(state, skeleton, path)
    try:
        kernels = torch.zeros(total, dtype=torch.bool)
        kernels[torch.tensor(kernel_ids, dtype=torch.long)] = True
        module = extract_module(make_modular(spec.build()), kernels,
                                keep_gates=flags["keep_gates"])
        update_mwt_info(module, module=replace(mwt_info(module).module, input_shape=shape,
                                               fold_gates=flags["fold_gates"]))
        if rows is not None:
            keep_output_rows(module, rows)
        if composition != "none":
            report = meta.get("report", {})
            module = ReusedModule(module, n, head if head is not None else rows,
                                  report if isinstance(report, dict) else {},
                                  head=composition == "head")
        module.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError, MwtError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _fail(path, reason) from exc
    if shape is not None:
        try:
            with torch.no_grad():
                module.eval()(torch.zeros((1, *shape)))
        except RuntimeError as exc:
            raise _fail(path, f"it does not run on its input_shape {list(shape)}") from exc
    return module.eval()


def export_path(module_dir, fmt: str, out=None, force: bool = False) -> Path:
    """Where ``mwt export module`` writes, checked before any work: never a module's own files,
    never a directory, a FIFO or a device, never an existing file without ``force``."""
    if fmt not in EXPORT_FORMATS:
        raise MwtError(f"unknown export format {fmt!r}; use {', '.join(EXPORT_FORMATS)}")
    if out is not None and str(out).strip() == "":
        raise MwtError("the export file (--out) must not be empty")
    module_dir = Path(module_dir)
    path = Path(out) if out is not None else module_dir / f"module{EXPORT_FORMATS[fmt]}"
    own = {(module_dir / name).resolve() for name in MODULE_FILES}
    if path.resolve() in own:
        raise MwtError(f"{path} is one of the module's own files; export to another file")
    check_new_file(out if out is not None else path, force, "export file (--out)")
    return path


def export_module(module: nn.Module, path, fmt: str = "pt2", input_shape=None,
                  fold_bn: bool = True) -> Path:
    """Export a module to a file that runs without torch-mwt, with any batch size.

    ``pt2`` (default): a ``torch.export`` ExportedProgram, loaded with ``torch.export.load``.
    ``onnx``: ONNX through torch's dynamo exporter, for any ONNX runtime (needs ``onnx`` and
    ``onnxscript``: ``pip install 'torch-mwt[export]'``). ``torchscript``: ``torch.jit``, which
    current torch deprecates; kept for as long as torch supports it. ``fold_bn`` folds each
    BatchNorm into its convolution first (``mwt.inference.fold_batchnorm``): same outputs,
    fewer passes over memory.
    """
    shape = input_shape or module_input_shape(module)
    if not shape:
        raise MwtError("the module's input shape is unknown; pass input_shape=(C, H, W)")
    if fmt not in EXPORT_FORMATS:
        raise MwtError(f"unknown export format {fmt!r}; use {', '.join(EXPORT_FORMATS)}")
    if fmt == "onnx" and any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript")):
        raise MwtError("ONNX export needs the onnx and onnxscript packages: "
                       "pip install 'torch-mwt[export]'")
    # A batch of 2: an example batch of 1 would let the exporters specialise the batch size.
    example = torch.zeros((2, *shape), device=next(module.parameters()).device)
    # An existing regular file is replaced (the CLI asks for --force first); nothing else is.
    path = check_new_file(path, force=True, what="export file")
    module = fold_batchnorm(module) if fold_bn else module.eval()
    make_dir(path.parent)
    # Whatever the user's name (no extension, 240 characters), the exporters write a short name
    # with the format's extension, which torch's archive writers accept; it is renamed after.
    tmp = temp_path(path, EXPORT_FORMATS[fmt])
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The exporters' deprecation and progress notices are noise for these plain graphs.
            warnings.simplefilter("ignore")
            _EXPORTERS[fmt](module, example, tmp)
        os.chmod(tmp, 0o666 & ~umask())
        tmp.replace(path)
    except OSError as exc:
        raise os_error(path, exc) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _batch_dim():
    return torch.export.Dim("batch", min=1, max=65536)


def _export_pt2(module: nn.Module, example: torch.Tensor, tmp: Path) -> None:
    program = torch.export.export(module, (example,), dynamic_shapes=({0: _batch_dim()},))
    torch.export.save(program, str(tmp))


def _export_onnx(module: nn.Module, example: torch.Tensor, tmp: Path) -> None:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        program = torch.onnx.export(module, (example,), dynamo=True, verbose=False,
                                    dynamic_shapes=({0: _batch_dim()},),
                                    input_names=["input"], output_names=["logits"])
    program.save(str(tmp))


def _export_torchscript(module: nn.Module, example: torch.Tensor, tmp: Path) -> None:
    torch.jit.save(torch.jit.trace(module, example), str(tmp))


_EXPORTERS = {"pt2": _export_pt2, "onnx": _export_onnx, "torchscript": _export_torchscript}
