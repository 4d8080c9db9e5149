"""How CNNSplitter's candidate modules are scored: each candidate's logit of its own class on
every sample of the search split, the input of the shared fitness (:mod:`mwt.baselines.fitness`).

Two ways, which compute the same numbers (to float rounding):

- ``"cut"`` (the default, as the public code does): each candidate is physically cut out of the
  standard model by :func:`mwt.extract.extract_module` (convolutions sliced to the kept input and
  output channels) with its BatchNorm folded into the convolutions
  (:func:`mwt.inference.fold_batchnorm`), and run on the samples. A candidate then costs its own
  MACs, 0.3-0.5x of the model's at CNNSplitter's initial active ratios, plus a few
  milliseconds of extraction.
- ``"masked"``: the whole model runs with the candidate's removed kernels zeroed behind their
  BatchNorm (:func:`mwt.baselines.probe.target_logits`), many candidates in one batched pass. It
  costs the full model per candidate; on an accelerator, where one large batch beats many small
  modules, it can still be the faster one.

A candidate's logits depend only on its kernel set and class, so :class:`CandidateScorer` keeps
the logits of the last generation's candidates: the kept parents (carried over unchanged) and
duplicate chromosomes are not run again. ``workers`` candidates are scored side by side in
threads, each with ``threads // workers`` torch threads (the public code ran the ten classes'
searches as ten processes); the result does not depend on the number of workers.
"""

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn as nn

from mwt.baselines.probe import Structure, build_probe, target_logits
from mwt.errors import MwtError
from mwt.extract import extract_module
from mwt.gates import make_modular
from mwt.inference import fold_batchnorm

SCORINGS = ("cut", "masked")


@contextlib.contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class CandidateScorer:
    """Scores candidate modules of a standard ``model`` on fixed samples ``x`` (see the module
    docstring). ``batch_size``: samples per forward pass of a cut module, or (candidate, sample)
    pairs per pass of the masked model. ``workers``: candidates scored side by side (None: the
    torch threads this process may use, each worker then running one)."""

    def __init__(self, model: nn.Module, structure: Structure, x: torch.Tensor, *,
                 scoring: str = "cut", batch_size: int = 1024, device=None,
                 workers: int | None = None):
        if scoring not in SCORINGS:
            raise MwtError(f"scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise MwtError(f"workers must be a positive integer, got {workers!r}")
        self.scoring, self.structure, self.x = scoring, structure, x
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else x.device
        self.threads = torch.get_num_threads()
        self.workers = workers if workers is not None else self.threads
        if scoring == "masked":
            self.probe = build_probe(model, structure).to(self.device)
        else:
            # Gates inserted once (extract_module would insert and strip them per candidate);
            # their random initialisation must not move the caller's random stream.
            with torch.random.fork_rng(devices=[]):
                self.template = make_modular(model).to(self.device).eval()
            self._x_cut = _channels_last(x)
        self._cache: dict[tuple[int, bytes], torch.Tensor] = {}
        self.hits = 0  # candidates answered from the cache, for the report

    # -- one candidate -------------------------------------------------------------------------

    @torch.inference_mode()
    def cut_logits(self, mask: torch.Tensor, target: int, x: torch.Tensor | None = None):
        """float [N]: the cut candidate's logit of class ``target`` on every sample.

        Module and samples run in channels_last: the narrow convolutions of a cut module ran
        1.9x faster so on a 2-core CPU (benchmarks/RESULTS.md)."""
        x = self._x_cut if x is None else _channels_last(x)
        module = fold_batchnorm(extract_module(self.template, mask.cpu(), share_weights=True))
        module = module.to(memory_format=torch.channels_last)
        out = [module(x[i:i + self.batch_size].to(self.device))[:, target].float()
               for i in range(0, len(x), self.batch_size)]
        return torch.cat(out)

    # -- many ----------------------------------------------------------------------------------

    def logits(self, masks: torch.Tensor, targets: torch.Tensor, x: torch.Tensor | None = None,
               step: Callable[[int], None] | None = None, cache: bool = True) -> torch.Tensor:
        """float [M, N] on the device: candidate m's logit of class ``targets[m]`` on every
        sample of ``x`` (default: the search samples). ``masks`` bool [M, K]. ``cache``: read
        and keep results for the search samples (never for other ``x``)."""
        use_cache = cache and x is None
        if self.scoring == "masked":
            return target_logits(self.probe, self.structure, self.x if x is None else x, masks,
                                 targets, self.batch_size, self.device, step)
        n = len(self.x if x is None else x)
        out = torch.empty(len(masks), n, dtype=torch.float32, device=self.device)
        todo: dict[tuple[int, bytes], list[int]] = {}
        for i, (m, t) in enumerate(zip(masks, targets)):
            key = (int(t), m.cpu().numpy().tobytes())
            if use_cache and key in self._cache:
                out[i] = self._cache[key]
                self.hits += 1
            else:
                todo.setdefault(key, []).append(i)
        cached = len(masks) - sum(len(rows) for rows in todo.values())
        if step is not None and cached:
            step(cached)
        jobs = list(todo.items())

        def run(job):
            (target, _), rows = job
            return self.cut_logits(masks[rows[0]], target, x)

        workers = max(1, min(self.workers, len(jobs)))
        with _torch_threads(self.threads // workers if workers > 1 else self.threads), \
                ThreadPoolExecutor(workers) as pool:
            for (key, rows), logit in zip(jobs, pool.map(run, jobs) if workers > 1
                                          else map(run, jobs)):
                self._store(out, key, rows, logit, use_cache, step)
        return out

    def _store(self, out, key, rows, logit, use_cache, step) -> None:
        out[rows] = logit
        if use_cache:
            self._cache[key] = logit
        self.hits += len(rows) - 1  # duplicates within the call were run once
        if step is not None:
            step(len(rows))

    def keep_only(self, masks: torch.Tensor, targets: torch.Tensor) -> None:
        """Forget every cached candidate but these (the next generation's survivors are among
        the current one's), so the cache holds one population."""
        keep = {(int(t), m.cpu().numpy().tobytes()) for m, t in zip(masks, targets)}
        self._cache = {k: v for k, v in self._cache.items() if k in keep}


__all__ = ["SCORINGS", "CandidateScorer"]
