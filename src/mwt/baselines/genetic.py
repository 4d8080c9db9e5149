"""CNNSplitter's chromosomes and genetic operators (Qi et al., ASE 2022, section 3.2; the public
code's ``population_initializer.py``, ``module_tools.decode`` and the PyGAD-derived ``ga.py``).

A chromosome is a bit vector with one *segment* per group of tied layers (see
:mod:`mwt.baselines.probe`). Within a segment, the layer's channels, sorted by one class's kernel
importance (most important first), are cut into ``G`` near-equal contiguous groups (the first
``channels % G`` groups one channel larger, like ``numpy.array_split``); gene ``g`` set to 1 keeps
the ``g``-th most important group. Every layer of a tied group keeps the same kernels. A layer
whose genes are all 0 keeps its first kernel (index 0), as the public code does, so a module
never loses a layer. Every random draw comes from a ``torch.Generator`` the caller seeds.
"""

import math
from dataclasses import dataclass

import torch

from mwt.baselines.probe import Structure


@dataclass(frozen=True)
class Layout:
    """Where each segment's genes sit in a chromosome and which kernels they control."""

    layer_sizes: tuple[int, ...]          # kernels per gated layer, in mask order
    groups: tuple[tuple[int, ...], ...]   # gated layers per segment
    genes: tuple[int, ...]                # genes (kernel groups) per segment

    @classmethod
    def of(cls, structure: Structure, small_groups: int = 10, large_groups: int = 100,
           large_layer: int = 256, width: float = 1.0) -> "Layout":
        """G = ``small_groups`` for a layer of fewer than ``large_layer`` channels, else
        ``large_groups``; never more groups than channels (only tiny models have fewer).

        ``width``: the model's width multiplier. The published rule was written for full-width
        models; a layer is judged by its full-width size (channels / width), so that each gene
        of a narrower model controls the same share of its layer as in the published chromosome,
        down to one kernel per gene (SimCNN's 12 gated layers at width 0.25: 822 genes, against
        the published 930 at full width and 120 by the rule on the channels as they are).
        ``width=1`` judges the channels as they are."""
        sizes = tuple(structure.layer_sizes)
        genes = []
        for group in structure.groups:
            n = sizes[group[0]]
            full = round(n / width)
            genes.append(min(n, small_groups if full < large_layer else large_groups))
        return cls(sizes, structure.groups, tuple(genes))

    @property
    def num_genes(self) -> int:
        return sum(self.genes)

    @property
    def starts(self) -> list[int]:
        """Where each gated layer's kernels start in a mask, and the total at the end."""
        out = [0]
        for k in self.layer_sizes:
            out.append(out[-1] + k)
        return out

    @property
    def offsets(self) -> list[int]:
        """The first gene of each segment."""
        out, at = [], 0
        for g in self.genes:
            out.append(at)
            at += g
        return out

    def gene_of_rank(self, segment: int) -> torch.Tensor:
        """For each importance rank of the segment's channels, the gene (within the segment)
        that controls it: ``numpy.array_split`` groups."""
        n, g = self.layer_sizes[self.groups[segment][0]], self.genes[segment]
        small, extra = divmod(n, g)
        counts = torch.tensor([small + 1] * extra + [small] * (g - extra))
        return torch.repeat_interleave(torch.arange(g), counts)

    def gene_map(self, orders: list[torch.Tensor]) -> torch.Tensor:
        """long [K]: the gene controlling each gated kernel, for one class whose importance
        order (channel indices, most important first) per segment is ``orders``."""
        layer_start = self.starts
        out = torch.empty(layer_start[-1], dtype=torch.long)
        for s, (group, offset) in enumerate(zip(self.groups, self.offsets)):
            genes = torch.empty(self.layer_sizes[group[0]], dtype=torch.long)
            genes[orders[s]] = self.gene_of_rank(s) + offset
            for layer in group:
                out[layer_start[layer]:layer_start[layer + 1]] = genes
        return out

    def decode(self, chromosomes: torch.Tensor, gene_map: torch.Tensor) -> torch.Tensor:
        """bool [P, K]: the kernels each chromosome keeps (``gene_map`` from :meth:`gene_map`);
        a layer left empty keeps its kernel 0."""
        masks = chromosomes.bool()[:, gene_map]
        start = 0
        for k in self.layer_sizes:
            block = masks[:, start:start + k]
            block[:, 0] |= ~block.any(dim=1)
            start += k
        return masks


def initial_population(layout: Layout, sensitive: torch.Tensor, size: int,
                       sensitive_ratios, insensitive_ratios, temperature: float,
                       generator: torch.Generator) -> torch.Tensor:
    """bool [size, genes]: CNNSplitter's heuristic initial population.

    In every segment of every chromosome an active ratio is drawn from ``sensitive_ratios`` (a
    sensitive layer) or ``insensitive_ratios``; ``int(G * ratio)`` genes are switched on, drawn
    without replacement with probability proportional to exp((G - 1 - rank) / temperature), so
    the groups of the most important kernels are favoured.
    """
    pop = torch.zeros(size, layout.num_genes, dtype=torch.bool)
    for s, (g, offset) in enumerate(zip(layout.genes, layout.offsets)):
        ratios = torch.tensor(sensitive_ratios if bool(sensitive[s]) else insensitive_ratios,
                              dtype=torch.float64)
        weights = torch.exp((g - 1 - torch.arange(g, dtype=torch.float64)) / temperature)
        picks = torch.randint(len(ratios), (size,), generator=generator)
        for i in range(size):
            # the public code's int(ng * ratio), with a guard against 0.7 * 10 = 6.9999...
            active = min(g, int(math.floor(g * float(ratios[picks[i]]) + 1e-9)))
            if active:
                genes = torch.multinomial(weights, active, replacement=False,
                                          generator=generator)
                pop[i, offset + genes] = True
    return pop


def select_parents(fitness: torch.Tensor, count: int) -> torch.Tensor:
    """Steady-state selection: the indices of the ``count`` fittest, best first (ties: lower
    index first)."""
    return torch.sort(fitness, descending=True, stable=True).indices[:count]


def crossover(parents: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Single-point crossover: child k takes parent k's genes before a random point in
    [0, genes) and parent k+1's from it (parents taken cyclically), as PyGAD does."""
    n, length = parents.shape
    k = torch.arange(count)
    points = torch.randint(length, (count,), generator=generator)
    before = torch.arange(length)[None, :] < points[:, None]
    return torch.where(before, parents[k % n], parents[(k + 1) % n])


def mutate(children: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Random mutation by gene space: in each child, ``max(1, int(rate * genes))`` distinct genes
    are re-drawn from {0, 1} (a re-drawn gene may keep its value), as PyGAD's
    ``mutation_percent_genes`` does."""
    count, length = children.shape
    n = min(length, max(1, int(rate * length + 1e-9)))
    genes = torch.rand(count, length, generator=generator).argsort(dim=1)[:, :n]
    values = torch.randint(2, (count, n), generator=generator).bool()
    out = children.clone()
    out.scatter_(1, genes, values)
    return out


def next_population(population: torch.Tensor, fitness: torch.Tensor, parents: int, keep: int,
                    mutation_rate: float, generator: torch.Generator) -> torch.Tensor:
    """One genetic step: the ``parents`` fittest mate, and the next population is the ``keep``
    fittest followed by ``len(population) - keep`` mutated children. Row 0 is then the best of
    this generation, which the next fitness evaluation relies on."""
    chosen = population[select_parents(fitness, parents)]
    children = crossover(chosen, len(population) - keep, generator)
    return torch.cat([chosen[:keep], mutate(children, mutation_rate, generator)])


__all__ = ["Layout", "initial_population", "select_parents", "crossover", "mutate",
           "next_population"]
