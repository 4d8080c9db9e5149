"""On-demand reuse (paper section 3.4): a mixed module for M classes with a new N -> M head.

The mixed module keeps the union of the target classes' kernels and the original N-way output;
a randomly initialised head (ReLU, then Linear N -> M) maps it to the sub-task, and the whole
sub-model is fine-tuned for a few epochs on the original training samples of those classes. The
epoch kept is the best one on a validation split carved from those training samples.
"""

import torch
import torch.nn as nn

from mwt.data import as_tensors
from mwt.errors import MwtError
from mwt.extract import extract_module, kernel_share
from mwt.gates import count_gated_kernels, model_config
from mwt.macs import count_macs
from mwt.modularize import ModuleSet
from mwt.train import resolve_device, train


class ReusedModule(nn.Module):
    """A mixed module plus its sub-task head; ``forward`` returns M-way logits."""

    def __init__(self, module: nn.Module, num_outputs: int, classes: list[int]):
        super().__init__()
        self.module = module
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(num_outputs, len(classes)))
        self.classes = list(classes)  # original class id of each output

    def forward(self, x):
        return self.head(self.module(x))


def select_classes(data, classes: list[int]):
    """The samples of ``classes``, with labels renumbered 0..M-1 in the order given."""
    x, y = as_tensors(data)
    lookup = torch.full((int(max(int(y.max()), max(classes))) + 1,), -1, dtype=torch.long)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    new = lookup.to(y.device)[y]
    keep = new >= 0
    if not bool(keep.any()):
        raise MwtError(f"the data has no samples of classes {classes}")
    return x[keep], new[keep]


@torch.no_grad()
def subtask_accuracy(model: nn.Module, data, classes: list[int] | None = None,
                     batch_size: int = 1024) -> float:
    """Accuracy on (x, y) with y in 0..M-1. With ``classes``, ``model`` gives N-way logits and
    predicts the best of the M target classes' logits (a module used without fine-tuning)."""
    x_all, y_all = data
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(y_all), batch_size):
        logits = model(x_all[start:start + batch_size].to(device))
        if classes is not None:
            logits = logits[:, classes]
        correct += int((logits.argmax(1).cpu() == y_all[start:start + batch_size].cpu()).sum())
    model.train(was_training)
    return correct / max(len(y_all), 1)


def _split(x, y, fraction: float, seed: int):
    if not 0 <= fraction < 1:
        raise MwtError(f"val_fraction must lie in [0, 1), got {fraction}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g).to(y.device)
    n_val = int(round(len(y) * fraction))
    if fraction > 0 and n_val == 0:
        n_val = 1
    val, tr = perm[:n_val], perm[n_val:]
    return (x[tr], y[tr]), (x[val], y[val])


def reuse(model: nn.Module, mods: ModuleSet, classes, train_data, *, epochs: int = 5,
          test_data=None, val_fraction: float = 0.1, keep_gates: bool = False,
          fold_gates: bool = False, lr: float = 0.01, batch_size: int = 128, seed: int = 0,
          device=None, progress: bool = False, verbose: bool = False,
          hflip: bool | None = None) -> ReusedModule:
    """Build and fine-tune the sub-model for ``classes`` (ids or names); see module docstring.

    Returns a ``ReusedModule`` whose ``report`` holds the kernel share, MACs and parameters
    against the full model, and its accuracy before (the module's N-way logits restricted to the
    target classes) and after fine-tuning, on ``test_data`` when given.
    """
    if count_gated_kernels(model) != mods.total_kernels:
        raise MwtError(f"the module set was computed for a different model ({mods.total_kernels} "
                       f"kernels; this model has {count_gated_kernels(model)})")
    ids = mods.class_ids(classes)
    if len(ids) < 2:
        raise MwtError("reuse needs at least two classes (a sub-task with one class has nothing "
                       "to classify)")
    if epochs < 0:
        raise MwtError(f"epochs must be >= 0, got {epochs}")
    device = resolve_device(device)
    model = model.to(device).eval()
    kernels = mods.kernels_for(ids)
    gate_values = mods.gate_means_for(ids) if fold_gates else None
    module = extract_module(model, kernels, keep_gates=keep_gates, fold_gates=fold_gates,
                            gate_values=gate_values)
    num_outputs = model_config(model).get("num_classes") or mods.num_classes
    torch.manual_seed(seed)
    sub = ReusedModule(module, num_outputs, ids).to(device)

    x, y = select_classes(train_data, ids)
    fit, val = _split(x, y, val_fraction, seed)
    test = select_classes(test_data, ids) if test_data is not None else None
    before = {"val": subtask_accuracy(module, val, ids) if len(val[1]) else None,
              "test": subtask_accuracy(module, test, ids) if test is not None else None}
    if hflip is None:
        hflip = bool(getattr(train_data, "hflip", True))
    history = []
    if epochs > 0:
        result = train(sub, fit, val if len(val[1]) else None, epochs=epochs, lr=lr,
                       batch_size=min(batch_size, len(fit[1])), seed=seed, device=device,
                       progress=progress, verbose=verbose, restore_best=len(val[1]) > 0,
                       hflip=hflip)
        history = result.history
    sub.eval()
    input_shape = tuple(x.shape[1:])
    full = extract_module(model, torch.ones(mods.total_kernels, dtype=torch.bool))
    macs_full, macs_sub = count_macs(full, input_shape), count_macs(sub, input_shape)
    params_full = sum(p.numel() for p in full.parameters())
    params_sub = sum(p.numel() for p in sub.parameters())
    sub.report = {
        "classes": ids,
        "class_names": [mods.classes[i] for i in ids] if mods.classes else [],
        "kernel_share": kernel_share(module),
        "macs": macs_sub, "macs_full": macs_full, "macs_ratio": macs_sub / macs_full,
        "params": params_sub, "params_full": params_full, "params_ratio": params_sub / params_full,
        "acc_before_finetune": before,
        "acc_after_finetune": {
            "val": max((r["test_acc"] for r in history), default=None),
            "test": subtask_accuracy(sub, test) if test is not None and epochs else None},
        "epochs": epochs, "keep_gates": keep_gates, "fold_gates": fold_gates,
        "history": history,
    }
    sub.input_shape = input_shape
    sub.base_config = model_config(model)
    return sub
