"""Modularity tracked while a model trains (paper section 4.2, Figure 5).

After each epoch, the model is run in eval mode over one FIXED sample of its training split (the
same images every epoch, drawn with a fixed seed, so the curves of a standard and a modular run
of the same data are comparable); the sample's kernel sets give the modules of section 3.3 at
tau 0.9 (``mwt.modularize.module_masks``), and from them the Jaccard cohesion (Eq. 2) and
coupling (Eq. 3), the KRR and the kernel rate (mean share of kernels a sample uses). A standard
model's kernel sets come from its BatchNorm outputs with any positive element, as ``modularize``
reads them. The figures go into the epoch's line of ``metrics.jsonl`` as ``track_*`` keys.

It is off by default (``TrainConfig.track_modularity = 0``) and cheap when on: one no-grad pass
over the sample (1,000 images by default, under 2% of a Fashion-MNIST epoch). It uses no
collective operation, so under several processes the training loop calls it on rank 0 only.
"""

import torch
import torch.nn.functional as F

from mwt.errors import MwtError
from mwt.gates import gateable_layers, is_modular
from mwt.inference import batches, evaluating
from mwt.metrics import jaccard_cohesion, jaccard_coupling, kernel_retention_rate

TRACK_TAU = 0.9
TRACK_SEED = 0            # the sample does not depend on the run's seed
DEFAULT_TRACK_SAMPLES = 1000
KEYS = ("track_cohesion", "track_coupling", "track_krr", "track_kernel_rate")


def tracking_sample(x: torch.Tensor, y: torch.Tensor, size: int, seed: int = TRACK_SEED):
    """``size`` training images (all of them if fewer), drawn once with a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(y), generator=g)[:size].to(y.device)
    return x[idx], y[idx]


def _kernel_sets(model, x, y, batch_size: int) -> torch.Tensor:
    # The relevance rule of a standard model lives in modularize; it is reused, not re-written.
    from mwt.modularize import _Relevance

    runner = model if is_modular(model) else _Relevance(model)
    device = next(model.parameters()).device
    sets = []
    with evaluating(model):
        for xb, _ in batches(x, y, batch_size, device):
            _, masks = model(xb, return_masks=True) if is_modular(model) else runner(xb)
            sets.append((torch.cat(list(masks), dim=1) > 0).cpu())
    return torch.cat(sets)


def modularity_snapshot(model, x: torch.Tensor, y: torch.Tensor, *, tau: float = TRACK_TAU,
                        batch_size: int = 1024) -> dict[str, float | None]:
    """Cohesion, coupling, KRR (modules at ``tau``) and kernel rate of ``model`` on (x, y).

    Classes absent from the sample have no module; a figure that cannot be computed (one class,
    or no class with two samples) is None rather than an error, so tracking never stops a run.
    """
    from mwt.modularize import module_masks

    if len(y) == 0:
        raise MwtError("the tracking sample is empty")
    sets = _kernel_sets(model, x, y, batch_size)
    labels = y.cpu().long()
    present = torch.unique(labels)
    lookup = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
    lookup[present] = torch.arange(len(present))
    local = lookup[labels]
    counts = torch.bincount(local, minlength=len(present)).float()
    frequencies = (F.one_hot(local, len(present)).float().T @ sets.float()) / counts[:, None]
    sizes = [layer.kernels for layer in gateable_layers(model)]
    masks, _ = module_masks(frequencies, sizes, tau)
    out = {"track_kernel_rate": float(sets.float().mean()),
           "track_krr": kernel_retention_rate(masks)}
    try:
        out["track_cohesion"] = float(jaccard_cohesion(sets, local, module_masks=masks))
    except MwtError:
        out["track_cohesion"] = None
    out["track_coupling"] = float(jaccard_coupling(masks)) if len(present) > 1 else None
    return out


def modularity_tracker(model, x_train: torch.Tensor, y_train: torch.Tensor, samples: int,
                       batch_size: int = 1024):
    """A function of no arguments that gives the ``track_*`` figures of ``model`` now, on a
    sample of ``samples`` training images drawn once here."""
    x, y = tracking_sample(x_train, y_train, samples)

    def snapshot() -> dict[str, float | None]:
        return modularity_snapshot(model, x, y, batch_size=batch_size)

    return snapshot


__all__ = ["modularity_snapshot", "modularity_tracker", "tracking_sample", "TRACK_TAU",
           "DEFAULT_TRACK_SAMPLES", "KEYS"]
