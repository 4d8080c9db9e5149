"""MwT (Qi et al., ICSE 2024): gates trained with cohesion and coupling losses (Eq. 4-6).

The paper's method and this library's default: a gate after every gated conv's BatchNorm
(``mwt.gates``), the loss CE + alpha L_ch + beta L_cp on the gates' masks (``mwt.losses``),
modules by the tau rule with its per-layer fallback (``mwt.rules.module_masks``), and a
sub-task module given a new head and fine-tuned (section 3.4). alpha / beta default to the
paper's Table 1 for the model and dataset.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch.nn as nn

from mwt.config import default_alpha_beta
from mwt.fusion import training_view
from mwt.gates import is_modular
from mwt.losses import modular_objective
from mwt.methods.base import Method
from mwt.rules import module_masks

# A gated run whose kernel rate ends above this has not become modular (gates start open).
UNMODULAR_KERNEL_RATE = 0.8


@dataclass(frozen=True)
class GatedMethod(Method):
    """What the gated methods (MwT, NeMo) share: the gates, their fused training graph, the tau
    rule, and the warning for gates that stayed open."""

    gated: ClassVar[bool] = True
    composition: ClassVar[str] = "head"

    def trains(self, model: nn.Module) -> bool:
        return is_modular(model)

    def signal_view(self, model: nn.Module, *, fuse: bool = True,
                    sync_bn: bool = False) -> nn.Module:
        return training_view(model, fuse=fuse, sync_bn=sync_bn)

    def unit_masks(self, frequencies, layer_sizes, tau):
        return module_masks(frequencies, layer_sizes, tau)

    def unmodular_note(self, history: list[dict], rate_label: str = "kernel rate") -> str | None:
        rate = history[-1].get("train_kernel_rate") if history else None
        if rate is None or rate <= UNMODULAR_KERNEL_RATE:
            return None
        epochs = history[-1]["epoch"]
        return (f"the {rate_label} is still {rate:.2f} after {epochs} epoch"
                f"{'s' if epochs > 1 else ''}: the model has not become modular (its gates are "
                f"still open); train more epochs or {self.open_gates_advice}")

    open_gates_advice: ClassVar[str] = "raise beta (the coupling weight)"


@dataclass(frozen=True)
class MwT(GatedMethod):
    name: ClassVar[str] = "mwt"
    weights: ClassVar[tuple] = ("cohesion", "coupling")
    loss_names: ClassVar[tuple] = (("cohesion_loss", "L_ch"), ("coupling_loss", "L_cp"))

    def default_weights(self, model, dataset):
        return default_alpha_beta(model, dataset)

    def objective(self, ce, signals, labels, alpha, beta, reduction, num_classes):
        loss, ch, cp = modular_objective(ce, signals, labels, alpha, beta, reduction,
                                         num_classes)
        return loss, {"cohesion_loss": ch, "coupling_loss": cp}


__all__ = ["MwT", "GatedMethod", "UNMODULAR_KERNEL_RATE"]
