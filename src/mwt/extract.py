"""Module extraction (paper section 3.3, Figure 3-d): a physically smaller ``nn.Module``.

Extraction finds what to cut, then cuts it, in the way of Torch-Pruning:

1. **Strip the gates** the module does not keep (``mwt.gates.strip_gates``).
2. **Propagate** (``mwt.channel_flow.propagate``): walk the traced graph once and map every node
   to the channels of its producer that are still computed, with one rule per op kind. The
   graph is not changed. Without kept gates, a conv's kernels that no kept unit reads (a
   MobileNet expansion's channels whose depthwise kernels were removed) are then left out too
   (``mwt.channel_flow.drop_unread``) and the flow is propagated again.
3. **Cut** (``mwt.slicing``): every layer whose channels were cut is replaced by its slice, folded
   gate values scale their layer, gathers go where a tensor's channels are not the ones its
   consumer reads (the two sides of a residual add, a grouped conv's groups), and splits get
   their parts' new sizes.

Anything that would mix removed and kept channels in a way we cannot follow (a channel-wise
product, a split into a part with no channel left, an unknown layer) is an error naming the
node, never a silent wrong result; ``mwt.extract_check`` raises it before training.

**A layer type not handled yet** (a torch.nn layer: fx traces through a user's own modules)
needs one entry in ``mwt.channel_flow.MODULE_RULES``, saying how its output channels follow
from its input channels (``passthrough`` for a layer that acts on each channel separately and
keeps a zero channel at zero), and, if it holds per-channel weights, one in
``mwt.slicing.SLICERS``: ``slicer(layer, inputs, outputs) -> the smaller layer``.
"""

import copy
import itertools

import torch
import torch.fx as fx
import torch.nn as nn

from mwt import slicing
from mwt.channel_flow import drop_unread, propagate
from mwt.errors import MwtError
from mwt.gates import gated_layers, is_modular, make_modular, strip_gates
from mwt.model_info import ModuleInfo, MwtInfo, mwt_info, set_mwt_info
from mwt.slicing import pad_gather


def _kept_per_layer(model, kernels: torch.Tensor) -> dict[str, torch.Tensor]:
    layers = gated_layers(model)
    total = sum(layer.kernels for layer in layers)
    kernels = torch.as_tensor(kernels)
    if kernels.dim() != 1 or kernels.numel() != total:
        raise MwtError(f"the kernel mask must be a 1-D bool tensor of {total} gated kernels, got "
                       f"shape {tuple(kernels.shape)}")
    if kernels.dtype != torch.bool:
        raise MwtError(f"the kernel mask must be a bool tensor, got {kernels.dtype}")
    kept, offset = {}, 0
    for layer in layers:
        idx = torch.nonzero(kernels[offset:offset + layer.kernels].cpu()).flatten()
        if idx.numel() == 0:
            raise MwtError(f"layer {layer.conv!r} keeps no kernels; every gated layer needs at "
                           "least one (mwt.modularize guarantees this)")
        kept[layer.conv] = idx
        offset += layer.kernels
    return kept


def _gate_values(model, gate_values, kept: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each gated layer's gate values on its kept kernels, keyed by the name of the layer they
    scale (its BN, or the conv itself)."""
    total = sum(layer.kernels for layer in gated_layers(model))
    values = torch.as_tensor(gate_values, dtype=torch.float32).cpu()
    if values.shape != (total,):
        raise MwtError(f"gate_values must be a float tensor of {total} gated kernels")
    out, offset = {}, 0
    for layer in gated_layers(model):
        out[layer.output] = values[offset:offset + layer.kernels][kept[layer.conv]]
        offset += layer.kernels
    return out


def extract_module(model: nn.Module, kernels, *, keep_gates: bool = False,
                   fold_gates: bool = False, gate_values=None,
                   share_weights: bool = False) -> fx.GraphModule:
    """Cut the kernels marked True in ``kernels`` out of a modular model into a smaller module.

    ``kernels``: 1-D bool tensor over all gated kernels, in the order of the concatenated masks
    of ``model(x, return_masks=True)`` (e.g. ``ModuleSet.kernels_for(classes)``).
    A standard model (no gates) is cut the same way over the kernels ``make_modular`` would gate
    (``mwt.gates.gateable_layers``): the module computes the standard model with every other
    gated kernel's output set to zero (e.g. a CNNSplitter module, ``mwt.baselines``). It has no
    gates to keep or fold.
    By default the gates are removed (paper section 3.3): the module computes what the modular
    model computes with every gate value set to 1 on kept kernels and 0 elsewhere.
    ``keep_gates=True`` keeps each gate, restricted to the kept kernels: the module then computes
    exactly what the modular model computes for samples whose relevant kernels it all keeps.
    ``fold_gates=True`` removes the gates but folds ``gate_values`` (one value per gated kernel,
    e.g. the mean gate value over the target classes' samples) into BatchNorm scale and shift.
    The module returns the original N-way logits.
    ``share_weights=True`` skips copying the model's tensors: layers the cut leaves whole (the
    classifier after its first Linear, say) then share their parameters with ``model``. For a
    module that is only run, never trained or saved (CNNSplitter scores a thousand candidates a
    generation this way); the default module owns all its tensors.
    """
    if not is_modular(model):
        if keep_gates or fold_gates:
            raise MwtError(f"{'keep_gates' if keep_gates else 'fold_gates'} needs a modular model "
                           "(from mwt.make_modular); a standard model has no gates")
        # Gates inserted only to be stripped again: the graph the passes below know. Their
        # random initialisation must not move the caller's random stream.
        with torch.random.fork_rng(devices=[]):
            model = make_modular(model)
    if keep_gates and fold_gates:
        raise MwtError("keep_gates and fold_gates exclude each other")
    if fold_gates and gate_values is None:
        raise MwtError("fold_gates needs gate_values (e.g. ModuleSet.gate_means_for(classes))")
    kept = _kept_per_layer(model, kernels)
    layers = gated_layers(model)

    if share_weights:  # every tensor stays where it is: copy only the modules and the graph
        memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
        gm = copy.deepcopy(model, memo)
    else:
        gm = copy.deepcopy(model)
    if not keep_gates:
        strip_gates(gm, inplace=True)
    gates = {layer.gate: layer.conv for layer in layers}
    flow = propagate(gm, kept, gates)
    if not keep_gates:  # kernels nothing reads need not be computed (channel_flow.drop_unread)
        computed = drop_unread(gm, flow)
        if any(len(computed[name]) != len(kept[name]) for name in kept):
            kept = computed
            flow = propagate(gm, kept, gates)
    folds = _gate_values(model, gate_values, kept) if fold_gates else {}
    slicing.slice_layers(gm, flow)
    slicing.fold_gates(gm, folds)  # (the argument of that name says whether to)
    slicing.insert_gathers(gm, flow, next(model.parameters()).device)
    slicing.resize_splits(flow)

    graph = gm.graph
    graph.eliminate_dead_code()
    graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    cut = ModuleInfo(
        kernels=tuple(int(i) for i in torch.nonzero(torch.as_tensor(kernels)).flatten()),
        total_kernels=sum(layer.kernels for layer in layers),
        keep_gates=keep_gates, fold_gates=fold_gates)
    gm.meta = {}
    return set_mwt_info(gm, MwtInfo(spec=mwt_info(model).spec,
                                    layers=tuple(layers) if keep_gates else (), module=cut))


def kernel_share(module: nn.Module) -> float:
    """Share of the modular model's gated kernels that an extracted module keeps."""
    info = mwt_info(module).module
    if info is None:
        raise MwtError("not an extracted module")
    return len(info.kernels) / info.total_kernels


__all__ = ["extract_module", "kernel_share", "pad_gather"]
