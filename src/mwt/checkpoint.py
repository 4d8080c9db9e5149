"""Run checkpoints: ``checkpoint.safetensors`` (weights, optimizer state) + JSON (config, metrics).

The safetensors file is the single source of truth: its header metadata carries the epoch, the
run config and the metrics history, so a crash between writing it and its JSON mirrors can never
pair weights with the wrong epoch. ``checkpoint.json`` and ``metrics.jsonl`` are rewritten from it.
"""

import json
from pathlib import Path

import torch
import torch.nn as nn

from mwt.checks import is_real
from mwt.errors import CheckpointError, MwtError
from mwt.io import load_tensors_and_metadata, save_tensors, write_json, write_json_lines
from mwt.models.registry import ModelSpec

FORMAT = "mwt-checkpoint/1"
WEIGHTS = "checkpoint.safetensors"


def save_checkpoint(out: Path, model: nn.Module, optimizer, epoch: int, run_config: dict,
                    history: list[dict]) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                tensors[f"momentum.{names[id(p)]}"] = buf
    meta = {"format": FORMAT, "epoch": str(epoch), "config": json.dumps(run_config),
            "history": json.dumps(history)}
    digest = save_tensors(out / WEIGHTS, tensors, metadata=meta)
    write_json(out / "checkpoint.json", {"format": FORMAT, "epoch": epoch, "weights": WEIGHTS,
                                         "sha256": digest, "last": history[-1]})
    write_json_lines(out / "metrics.jsonl", history)


def read_checkpoint(run_dir) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and decoded metadata (epoch, config, history) of a run's checkpoint."""
    path = Path(run_dir) / WEIGHTS
    if not path.exists():
        raise CheckpointError(f"{run_dir} holds no checkpoint ({WEIGHTS} is missing); "
                              "is it a run directory made by `mwt train`?")
    tensors, meta = load_tensors_and_metadata(path)  # the data checksum is verified here
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a torch-mwt checkpoint")
    try:
        info = {"epoch": int(meta["epoch"]), "config": json.loads(meta["config"]),
                "history": json.loads(meta["history"])}
    except (KeyError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path} has a damaged header") from exc
    if (info["epoch"] < 1 or not isinstance(info["config"], dict)
            or not isinstance(info["history"], list)
            or not all(isinstance(r, dict) for r in info["history"])):
        raise CheckpointError(f"{path} has a damaged header (epoch, config or history)")
    return tensors, info


def _is_str_list(x) -> bool:
    return isinstance(x, list) and all(isinstance(v, str) for v in x)


def _is_num_list(x) -> bool:
    return isinstance(x, list) and all(is_real(v) for v in x)


# What a run's config may hold besides the model: key -> check of its value.
_CONFIG_CHECKS = {
    "format": lambda v: isinstance(v, str),
    "train": lambda v: isinstance(v, dict),
    "modular": lambda v: isinstance(v, bool),
    "dataset": lambda v: isinstance(v, str),
    "classes": _is_str_list,
    "mean": _is_num_list,
    "std": _is_num_list,
    "cli": lambda v: isinstance(v, dict),
}


def check_run_config(config: dict, where) -> dict:
    """A run config whose fields have the types the rest of the library relies on."""
    for key, check in _CONFIG_CHECKS.items():
        if key in config and config[key] is not None and not check(config[key]):
            raise CheckpointError(f"the run config in {where} is damaged: {key} has the wrong "
                                  "type")
    return config


def _model_spec(config: dict, where) -> ModelSpec:
    """The registered model a run was trained on, every field checked."""
    spec = config.get("model")
    if not isinstance(spec, dict) or not spec.get("name"):
        raise MwtError(f"{where} was trained on a custom model; rebuild it in Python and load "
                       f"the weights with mwt.checkpoint.load_weights")
    if not isinstance(config.get("modular", False), bool):
        raise CheckpointError(f"the checkpoint header in {where} has a non-boolean 'modular'")
    try:
        return ModelSpec.from_dict(spec)
    except MwtError as exc:
        raise CheckpointError(f"the checkpoint header in {where} describes a model that cannot "
                              f"be built ({exc})") from exc


def _load_state(model: nn.Module, tensors: dict[str, torch.Tensor], where,
                described_by: str | None = None) -> None:
    """Load a checkpoint's weights into ``model``, checked first: a tensor of another shape than
    the model's (a header or ``config.json`` that describes another width or class count than the
    weights hold) is one sentence naming ``described_by``, the description the model was built
    from, never a ``load_state_dict`` traceback."""
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    own = model.state_dict()
    for name, expected in own.items():  # the model's order: the same first mismatch whatever
        tensor = state.get(name)         # order the file lists its tensors in
        if tensor is not None and expected.shape != tensor.shape:
            source = described_by or "the model given"
            raise CheckpointError(
                f"{source} does not describe the weights in {Path(where) / WEIGHTS}: "
                f"{name} is {list(tensor.shape)} there but {list(expected.shape)} in the "
                f"described model (was a file edited, or copied from another run?)")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"the checkpoint in {where} does not fit this model (missing {len(missing)} tensors, "
            f"e.g. {missing[:2]}; unexpected {len(unexpected)}, e.g. {unexpected[:2]})")


def load_checkpoint_into(run_dir, model: nn.Module, optimizer, device,
                         described_by: str | None = None) -> tuple[int, list[dict]]:
    """Restore weights and optimizer momentum in place; returns (epochs done, history).
    ``described_by``: what ``model`` was built from (e.g. the run's config.json), for errors."""
    tensors, info = read_checkpoint(run_dir)
    _load_state(model, tensors, run_dir, described_by)
    params = dict(model.named_parameters())
    for name, p in params.items():
        buf = tensors.get(f"momentum.{name}")
        if buf is not None:
            optimizer.state[p]["momentum_buffer"] = buf.to(device=p.device, dtype=p.dtype).clone()
    model.to(device)
    return info["epoch"], info["history"]


def run_method(config: dict):
    """The ``mwt.methods.Method`` a run's config says it trained with (runs from before methods
    existed are MwT's); a damaged entry is a CheckpointError."""
    from mwt.methods import method_of

    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    try:
        return method_of(train)
    except MwtError as exc:
        raise CheckpointError(f"the run's training method is damaged ({exc})") from exc


def load_run(run_dir, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a registered model (standard or modular) from a run directory, with its weights."""
    from mwt.gates import make_modular

    tensors, info = read_checkpoint(run_dir)
    config = check_run_config(info["config"], run_dir)
    spec = _model_spec(config, run_dir)
    if config.get("classes") is not None and len(config["classes"]) != spec.num_classes:
        raise CheckpointError(f"the run config in {run_dir} names {len(config['classes'])} "
                              f"classes for a model of {spec.num_classes}")
    model = spec.build()
    if config.get("modular") and run_method(config).gated:
        model = make_modular(model)  # a MODA run's model has no gates
    # The tensors are the truth: first the header that built the model, then its mirror.
    _load_state(model, tensors, run_dir, f"the header of {Path(run_dir) / WEIGHTS}")
    _check_mirror(run_dir, config)
    model.to(device).eval()
    return model, {**config, "epoch": info["epoch"], "history": info["history"]}


def _check_mirror(run_dir, config: dict) -> None:
    """``config.json`` mirrors the checkpoint header's config; one describing another model
    (an edited width, say) would make other commands (``--resume``) build the wrong model."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return
    try:
        mirror = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return  # read and reported by the commands that use it
    if (isinstance(mirror, dict) and isinstance(mirror.get("model"), dict)
            and isinstance(config.get("model"), dict) and mirror["model"] != config["model"]):
        changed = sorted(k for k in set(mirror["model"]) | set(config["model"])
                         if mirror["model"].get(k) != config["model"].get(k))
        key = changed[0]
        raise CheckpointError(
            f"{path} describes another model than the run's checkpoint ({key} "
            f"{mirror['model'].get(key)!r}, checkpoint {config['model'].get(key)!r}); "
            "it was edited or copied from another run")


def load_weights(model: nn.Module, run_dir) -> nn.Module:
    """Load a run's weights into a model the caller built (e.g. a custom CNN)."""
    tensors, _ = read_checkpoint(run_dir)
    _load_state(model, tensors, run_dir)
    return model


__all__ = ["run_method", "save_checkpoint", "read_checkpoint", "load_checkpoint_into", "load_run",
           "load_weights"]
