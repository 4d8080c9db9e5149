"""Running a model over data without training it: eval mode, no gradients, batches on a device.

Evaluation, modularizing, sub-task accuracy and MAC counting all do this; they share these two
helpers so that a model always gets its train/eval mode back, whatever happens in between.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn


@contextmanager
def evaluating(model: nn.Module):
    """``model`` in eval mode under ``torch.no_grad()``; its previous mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int,
            device=None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive ``(x, y)`` slices of ``batch_size`` samples, moved to ``device``."""
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        if device is not None:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        yield xb, yb
