"""What a modular training method is, as one small object (``Method``).

MwT, NeMo and MODA differ in four places only, and a method says each of them:

1. **what it adds to the model**: gates (``gated``: MwT, NeMo, ``mwt.gates.make_modular``) or
   nothing (MODA reads the activations the forward pass computes anyway);
2. **which per-sample signal marks a unit relevant**, and how the training forward returns it
   (:meth:`Method.signal_view`: a view of the model sharing its parameters whose
   ``forward(x, return_masks=True)`` gives ``(logits, signals)``, one [B, K_l] tensor per
   unit layer; a unit is relevant to a sample when its signal is > 0);
3. **its training loss** on a batch of signals (:meth:`Method.objective`);
4. **its modularizing rule** (:meth:`Method.unit_masks`, from ``mwt.rules``) and **how a
   sub-task module is composed** (``composition``: ``"head"``, a new head fine-tuned on the
   sub-task, or ``"rows"``, the target classes' rows of the last layer and no fine-tuning).

The units are the kernels ``mwt.gates`` gates, the same for every method, so module sets,
extraction, module files and export need nothing per method. A method's hyper-parameters are
its dataclass fields; the two loss weights every method has are ``TrainConfig.alpha`` / ``beta``
(MwT: cohesion, coupling; NeMo: the contrastive loss, unused; MODA: affinity, dispersion),
decided per model and dataset by :meth:`Method.default_weights` when left at None.
"""

from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import torch
import torch.nn as nn

from mwt.errors import MwtError

COMPOSITIONS = ("head", "rows")


@dataclass(frozen=True)
class Method:
    name: ClassVar[str] = ""
    gated: ClassVar[bool] = True
    composition: ClassVar[str] = "head"
    # What alpha and beta weigh, for help texts and errors; None: the method has no such weight.
    weights: ClassVar[tuple[str | None, str | None]] = (None, None)
    # The losses ``objective`` reports, in the order the CLI shows them: (stats key, short name).
    loss_names: ClassVar[tuple[tuple[str, str], ...]] = ()

    def options(self) -> dict:
        """The method's own hyper-parameters, as ``TrainConfig.method_options`` saves them."""
        return asdict(self)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def validate(self) -> None:
        """One clear error for a bad hyper-parameter."""

    def default_weights(self, model: str | None, dataset: str | None) -> tuple[float | None,
                                                                                float | None]:
        raise NotImplementedError

    def check_weights(self, alpha, beta) -> None:
        """Refuse a weight the method does not have (``weights`` entry None)."""
        for value, what, flag in ((alpha, self.weights[0], "alpha"),
                                  (beta, self.weights[1], "beta")):
            if value is not None and what is None:
                raise MwtError(f"{self.name} has no {flag} weight; leave --{flag} unset")

    def trains(self, model: nn.Module) -> bool:
        """Whether training ``model`` with this method is modular training (else standard).
        Refuses a model the method cannot train, before any work."""
        raise NotImplementedError

    def signal_view(self, model: nn.Module, *, fuse: bool = True,
                    sync_bn: bool = False) -> nn.Module:
        """A view of ``model`` (sharing its parameters) whose ``forward(x, return_masks=True)``
        returns ``(logits, signals)``; ``fuse``: the fastest training graph (gates fused into
        BatchNorm), ``sync_bn``: BatchNorm statistics over all ranks."""
        raise NotImplementedError

    def objective(self, ce: torch.Tensor, signals: list[torch.Tensor], labels: torch.Tensor,
                  alpha: float | None, beta: float | None, reduction: str,
                  num_classes: int | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of one batch from its CE and signals, and its parts by name."""
        raise NotImplementedError

    def unit_masks(self, frequencies: torch.Tensor, layer_sizes: list[int], tau: float):
        """Per-class unit masks from relevance frequencies (see ``mwt.rules``)."""
        raise NotImplementedError

    def unmodular_note(self, history: list[dict], rate_label: str = "kernel rate") -> str | None:
        """A warning about a finished run that has not become modular, or None (``rate_label``:
        what the share of used units is called, ``mwt.train.rate_label``)."""
        return None


__all__ = ["Method", "COMPOSITIONS"]
