"""Modularizing (paper section 3.3): per-class kernel sets from one pass over the training data.

A kernel is relevant to a sample iff its gate value is > 0 (for a standard model without gates:
iff its BatchNorm output, and so its ReLU'd output, has any positive element, paper section 4.2).
Module c keeps a kernel iff at least a share tau of class c's training samples find it relevant;
a layer that would keep nothing for a class has tau lowered for it in steps of 0.05.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mwt.data import as_tensors
from mwt.errors import CheckpointError, MwtError
from mwt.gates import conv_bn_pairs, gated_layers, is_modular, model_config, trace
from mwt.io import read_artifact, save_tensors, write_json
from mwt.metrics import jaccard_cohesion, jaccard_coupling, kernel_retention_rate

TAU_STEP = 0.05
FORMAT = "mwt-modules/1"


@dataclass
class ModuleSet:
    """Per-class kernel masks of a modular model, with the figures of paper Table 2."""

    masks: torch.Tensor            # bool [N, K]: module c keeps kernel k
    layers: list[tuple[str, int]]  # (conv name, kernels) per gated layer, in mask order
    tau: float
    frequencies: torch.Tensor      # float [N, K]: share of class-c samples using kernel k
    gate_means: torch.Tensor       # float [N, K]: mean gate value over class-c samples
    counts: torch.Tensor           # int [N]: training samples per class
    layer_tau: torch.Tensor        # float [N, L]: the tau each class's layer ended up with
    classes: list[str] = field(default_factory=list)
    cohesion: float = float("nan")
    coupling: float = float("nan")
    krr: float = float("nan")
    seconds: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.masks.shape[0]

    @property
    def total_kernels(self) -> int:
        return self.masks.shape[1]

    def class_ids(self, classes) -> list[int]:
        """Class ids from ids or names; a bad one is a clear error."""
        if isinstance(classes, (int, str)):
            classes = [classes]
        ids = []
        lower = [c.lower() for c in self.classes]
        for c in classes:
            if isinstance(c, str) and not c.lstrip("-").isdigit():
                if c.lower() not in lower:
                    raise MwtError(f"unknown class {c!r}; classes are: {', '.join(self.classes)}")
                ids.append(lower.index(c.lower()))
                continue
            i = int(c)
            if not 0 <= i < self.num_classes:
                raise MwtError(f"class id {i} is out of range: the model has {self.num_classes} "
                               f"classes (0..{self.num_classes - 1})")
            ids.append(i)
        if not ids:
            raise MwtError("no classes given")
        if len(set(ids)) != len(ids):
            raise MwtError(f"classes are repeated: {classes}")
        return ids

    def kernels_for(self, classes) -> torch.Tensor:
        """The union of the kernel sets of the given classes' modules (a mixed module, 3.4)."""
        return self.masks[self.class_ids(classes)].any(dim=0)

    def gate_means_for(self, classes) -> torch.Tensor:
        """Mean gate value of each kernel over all training samples of the given classes."""
        ids = self.class_ids(classes)
        weights = self.counts[ids].float()
        return (self.gate_means[ids] * weights[:, None]).sum(0) / weights.sum().clamp(min=1)

    def summary(self) -> dict:
        return {"tau": self.tau, "krr": self.krr, "cohesion": self.cohesion,
                "coupling": self.coupling, "kernels_per_module": self.masks.sum(1).tolist(),
                "total_kernels": self.total_kernels, "seconds": self.seconds}

    def save(self, directory) -> None:
        """``modules.safetensors`` + ``modules.json`` in ``directory`` (atomic writes)."""
        directory = Path(directory)
        save_tensors(directory / "modules.safetensors", {
            "masks": self.masks.to(torch.uint8), "frequencies": self.frequencies,
            "gate_means": self.gate_means, "counts": self.counts, "layer_tau": self.layer_tau})
        write_json(directory / "modules.json", {
            "format": FORMAT, "classes": self.classes, "layers": self.layers,
            "model": self.model, **self.summary()})

    @classmethod
    def load(cls, directory) -> "ModuleSet":
        meta, t = read_artifact(directory, "modules", FORMAT, "module set")
        try:
            layers = [(str(n), int(k)) for n, k in meta["layers"]]
            masks = t["masks"].bool()
            ok = masks.dim() == 2 and masks.shape[1] == sum(k for _, k in layers)
            ok = ok and all(t[k].shape == masks.shape for k in ("frequencies", "gate_means"))
            ok = (ok and t["counts"].shape == (masks.shape[0],)
                  and len(meta["classes"]) == len(masks))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{directory} holds an incomplete module set ({exc})") from exc
        if not ok:
            raise CheckpointError(f"{directory} holds inconsistent module-set files")
        return cls(masks=masks, layers=layers, tau=float(meta["tau"]),
                   frequencies=t["frequencies"], gate_means=t["gate_means"], counts=t["counts"],
                   layer_tau=t["layer_tau"], classes=list(meta["classes"]),
                   cohesion=meta["cohesion"], coupling=meta["coupling"], krr=meta["krr"],
                   seconds=meta.get("seconds", {}), model=meta.get("model", {}))


class _Relevance(nn.Module):
    """A standard model's kernel relevance: BN output with any positive element (section 4.2)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        gm = trace(model)
        modules = dict(gm.named_modules())
        pairs = conv_bn_pairs(gm.graph, modules)[1:]  # the first conv is never gated
        self.bns = [modules[bn.target] for _, bn in pairs]
        self.layers = [(conv.target, modules[conv.target].out_channels) for conv, _ in pairs]
        self.model = model

    def forward(self, x):
        outputs = []
        hooks = [bn.register_forward_hook(lambda m, i, o: outputs.append(
            o.flatten(2).amax(2).gt(0).float())) for bn in self.bns]
        try:
            logits = self.model(x)
        finally:
            for h in hooks:
                h.remove()
        return logits, outputs


def _layer_sizes(model) -> list[tuple[str, int]]:
    if is_modular(model):
        return [(layer.conv, layer.kernels) for layer in gated_layers(model)]
    return _Relevance(model).layers


@torch.no_grad()
def collect_kernel_sets(model: nn.Module, data, batch_size: int = 1024, device=None):
    """One eval-mode pass: bool kernel sets [S, K], labels [S] and gate values summed per class."""
    x_all, y_all = as_tensors(data)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    runner = model if is_modular(model) else _Relevance(model)
    num_classes = model_config(model).get("num_classes") or int(y_all.max()) + 1
    if int(y_all.max()) >= num_classes or int(y_all.min()) < 0:
        raise MwtError(f"labels must lie in 0..{num_classes - 1}")
    was_training = model.training
    model.eval()
    sets, gate_sums = [], None
    try:
        for start in range(0, len(y_all), batch_size):
            x = x_all[start:start + batch_size].to(device, non_blocking=True)
            y = y_all[start:start + batch_size].to(device)
            if is_modular(model):
                _, masks = model(x, return_masks=True)
            else:
                _, masks = runner(x)
            flat = torch.cat(masks, dim=1)
            onehot = F.one_hot(y, num_classes).float()
            part = onehot.T @ flat
            gate_sums = part if gate_sums is None else gate_sums + part
            sets.append((flat > 0).cpu())
    finally:
        model.train(was_training)
    return torch.cat(sets), y_all.cpu(), gate_sums.cpu()


def module_masks(frequencies: torch.Tensor, layer_sizes: list[int], tau: float):
    """Keep kernel k in module c iff freq[c, k] >= tau, lowering tau per (class, layer) in steps
    of 0.05 where a layer would keep nothing. Returns (bool masks [N, K], used tau [N, L])."""
    masks, used = [], []
    for block in torch.split(frequencies, layer_sizes, dim=1):
        best = block.max(dim=1, keepdim=True).values
        # The largest tau - 0.05 j (j = 0, 1, ...) that the best kernel of the layer reaches.
        steps = torch.clamp(torch.ceil((tau - best) / TAU_STEP - 1e-6), min=0)
        layer_tau = tau - steps * TAU_STEP
        keep = block >= layer_tau - 1e-9
        # A layer no sample of the class ever uses still needs one kernel to carry a signal.
        unused = best.squeeze(1) <= 0
        if unused.any():
            keep[unused] = False
            keep[unused, 0] = True
        masks.append(keep)
        used.append(layer_tau.squeeze(1))
    return torch.cat(masks, dim=1), torch.stack(used, dim=1)


def modularize(model: nn.Module, train_data, tau: float = 0.9, *, batch_size: int = 1024,
               device=None, classes: list[str] | None = None) -> ModuleSet:
    """Compute every class's module (paper 3.3) and the KRR / cohesion / coupling of Table 2.

    ``train_data``: the *training* split, as ``(X, y)`` tensors, a Dataset or a DataLoader; it is
    used as given (eval mode, no augmentation). A standard model is modularized the same way with
    kernel relevance read off its BatchNorm outputs.
    """
    if not isinstance(tau, (int, float)) or not 0 < tau <= 1:
        raise MwtError(f"tau must lie in (0, 1], got {tau}")
    t0 = time.perf_counter()
    sets, labels, gate_sums = collect_kernel_sets(model, train_data, batch_size, device)
    t_pass = time.perf_counter() - t0
    num_classes = gate_sums.shape[0]
    counts = torch.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise MwtError(f"the training data has no samples of class(es) {missing}")
    onehot = F.one_hot(labels, num_classes).float()
    frequencies = (onehot.T @ sets.float()) / counts[:, None]
    layers = _layer_sizes(model)
    masks, layer_tau = module_masks(frequencies, [k for _, k in layers], float(tau))
    t1 = time.perf_counter()
    cohesion = jaccard_cohesion(sets, labels, module_masks=masks)
    coupling = jaccard_coupling(masks)
    seconds = {"pass": t_pass, "metrics": time.perf_counter() - t1,
               "total": time.perf_counter() - t0}
    names = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
    return ModuleSet(masks=masks, layers=layers, tau=float(tau), frequencies=frequencies,
                     gate_means=gate_sums / counts[:, None], counts=counts, layer_tau=layer_tau,
                     classes=names, cohesion=float(cohesion), coupling=float(coupling),
                     krr=kernel_retention_rate(masks), seconds=seconds,
                     model={**model_config(model), "modular": is_modular(model)})


__all__ = ["ModuleSet", "modularize", "module_masks", "collect_kernel_sets"]
