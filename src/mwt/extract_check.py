"""Refusing, before training, a model whose modules could not be cut out of it afterwards.

``mwt.make_modular`` and ``mwt.train`` (and so ``mwt train``, before the first epoch of modular
training) call :func:`check_extractable`: it extracts a trial module from the model as it is
(every gated layer cut to every other kernel, the pattern shifted from layer to layer so that the
two sides of a residual add keep different kernels) with the gates removed and, for a gated
model, kept, and runs it on an example batch when one is given. Whatever extraction cannot
follow (a channel-wise product, a channel flip, an unknown layer) is one error naming the graph
node, in seconds, instead of after hours of training.
"""

import torch
import torch.nn as nn

from mwt import gates
from mwt.errors import MwtError
from mwt.extract import extract_module
from mwt.gates import gateable_layers, is_modular
from mwt.inference import evaluating


def trial_kernels(model: nn.Module) -> torch.Tensor:
    """Every other kernel of each gated layer, starting at 0 or 1 in turn (a one-kernel layer
    keeps its kernel)."""
    parts = []
    for i, layer in enumerate(gateable_layers(model)):
        keep = (torch.arange(layer.kernels) + i) % 2 == 0
        if not bool(keep.any()):
            keep[0] = True
        parts.append(keep)
    return torch.cat(parts)


def check_extractable(model: nn.Module, example: torch.Tensor | None = None) -> None:
    """Raise one clear MwtError if modules cannot be extracted from ``model`` (modular, or a
    standard model cut over the kernels ``make_modular`` would gate); ``example``: a small
    batch of inputs the trial module must run on."""
    try:
        kernels = trial_kernels(model)
        variants = [{}] + ([{"keep_gates": True}] if is_modular(model) else [])
        for options in variants:
            module = extract_module(model, kernels, share_weights=True, **options)
            if example is not None:
                device = next(model.parameters()).device
                with evaluating(module), torch.no_grad():
                    module(example[:2].to(device))
    except MwtError as exc:
        raise MwtError(f"this model cannot be cut into modules, so modular training would be "
                       f"wasted; {exc}") from exc
    except RuntimeError as exc:  # the trial module does not run: a rule let a wrong cut pass
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MwtError(f"this model cannot be cut into modules: a trial module fails to run "
                       f"({first})") from exc


def make_modular(model: nn.Module, example: torch.Tensor | None = None, *,
                 check: bool = True) -> nn.Module:
    """``mwt.make_modular``: a modular copy of ``model`` (``mwt.gates.make_modular``: the gates
    and where they go), refused in one sentence if modules could not be cut out of it
    afterwards (:func:`check_extractable`, on ``example`` inputs when given), so that no one
    trains a model for hours that extraction cannot follow. ``check=False`` skips the check
    (``mwt.train`` makes it again before the first epoch)."""
    modular = gates.make_modular(model)
    if check:
        check_extractable(modular, example)
    return modular


__all__ = ["check_extractable", "make_modular", "trial_kernels"]
