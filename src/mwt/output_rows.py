"""A module that answers only for its target classes: the last layer cut to their rows.

MODA composes a sub-task's module this way (``mwt.methods.MODA``, ``composition = "rows"``):
the union of the target classes' units, and of the classifier's last Linear only the rows
(output neurons) of the target classes, so the module returns M-way logits in the order the
classes were given, with no new head and no fine-tuning. The Linear is replaced by its slice,
so the module is physically smaller there too; the row ids go into the module's ``ModuleInfo``
(``output_classes``) and its files.
"""

from dataclasses import replace

import torch
import torch.fx as fx
import torch.nn as nn

from mwt.errors import MwtError
from mwt.model_info import mwt_info, update_mwt_info


def keep_output_rows(module: fx.GraphModule, classes) -> fx.GraphModule:
    """Cut an extracted module's last Linear to the rows of ``classes`` (ids, in the order the
    module's outputs should have), in place; returns the module."""
    info = mwt_info(module).module
    if info is None:
        raise MwtError("keep_output_rows takes a module from mwt.extract_module")
    if info.keep_gates or mwt_info(module).modular:
        raise MwtError("a module that keeps its gates returns its masks too; cut its output "
                       "rows only after removing the gates")
    if info.output_classes is not None:
        raise MwtError("the module's output rows are already cut")
    ids = [int(c) for c in classes]
    output = next(n for n in module.graph.nodes if n.op == "output")
    (logits,) = output.args
    linear = (module.get_submodule(logits.target)
              if isinstance(logits, fx.Node) and logits.op == "call_module" else None)
    if not isinstance(linear, nn.Linear) or len(logits.users) != 1:
        raise MwtError("the model's logits do not come straight from a Linear layer, so its "
                       "output rows cannot be cut")
    if not ids or len(set(ids)) != len(ids) or not all(0 <= c < linear.out_features for c in ids):
        raise MwtError(f"output classes must be distinct ids in 0..{linear.out_features - 1}, "
                       f"got {ids}")
    rows = torch.tensor(ids, dtype=torch.long, device=linear.weight.device)
    new = nn.Linear(linear.in_features, len(ids), bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(linear.weight[rows])
        if linear.bias is not None:
            new.bias.copy_(linear.bias[rows])
    module.set_submodule(logits.target, new.train(linear.training))
    module.recompile()
    return update_mwt_info(module, module=replace(info, output_classes=tuple(ids)))


__all__ = ["keep_output_rows"]
