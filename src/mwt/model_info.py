"""What torch-mwt knows about a model, as one typed object (``MwtInfo``).

A registered model carries how it was built (``ModelSpec``); a modular one also its gated layers;
an extracted module also which kernels it keeps (``ModuleInfo``). ``mwt_info(model)`` reads it
from any of them; nothing else looks at attributes or ``meta`` keys. A GraphModule keeps it in
``meta`` (which, unlike ad-hoc attributes, survives ``deepcopy``); a plain model made by
``create_model`` has only its spec, as ``model.mwt_spec``.
"""

from dataclasses import dataclass, replace

import torch.nn as nn

from mwt.models.registry import ModelSpec

KEY = "mwt"


@dataclass(frozen=True)
class GatedLayer:
    """One gated conv: where it lives in the model and how many kernels its mask covers.
    ``output`` is the layer whose output the mask scales: the conv's BatchNorm, or the conv
    itself when it has none."""

    conv: str
    output: str
    gate: str
    kernels: int


@dataclass(frozen=True)
class ModuleInfo:
    """What an extracted module is: the gated kernels it keeps, out of how many, how its gates
    were treated, (once known) the shape of one input sample, and which output rows it keeps."""

    kernels: tuple[int, ...]
    total_kernels: int
    keep_gates: bool = False
    fold_gates: bool = False
    input_shape: tuple[int, ...] | None = None
    # The last Linear's rows it keeps (MODA's composition, mwt.output_rows); None: all of them.
    output_classes: tuple[int, ...] | None = None


@dataclass(frozen=True)
class MwtInfo:
    spec: ModelSpec | None = None        # the registered model it was built as (None: your own)
    layers: tuple[GatedLayer, ...] = ()  # its gated convs in mask order (empty: no gates)
    module: ModuleInfo | None = None     # set on extracted modules

    @property
    def modular(self) -> bool:
        return bool(self.layers)


def mwt_info(model: nn.Module) -> MwtInfo:
    meta = getattr(model, "meta", None)
    if isinstance(meta, dict) and isinstance(meta.get(KEY), MwtInfo):
        return meta[KEY]
    spec = getattr(model, "mwt_spec", None)
    return MwtInfo(spec=spec if isinstance(spec, ModelSpec) else None)


def set_mwt_info(model: nn.Module, info: MwtInfo) -> nn.Module:
    """Attach ``info`` to a GraphModule (the models torch-mwt makes and cuts)."""
    model.meta[KEY] = info
    return model


def update_mwt_info(model: nn.Module, **changes) -> nn.Module:
    return set_mwt_info(model, replace(mwt_info(model), **changes))


def model_config(model: nn.Module) -> dict:
    """The model's spec as files record it (``name``, ``num_classes``, ``in_channels``,
    ``width``, ``modular``); empty for a user's own model."""
    info = mwt_info(model)
    if info.spec is None:
        return {}
    return {**info.spec.to_dict(), "modular": info.modular}
