"""Baselines that modularize a *trained* model, to compare MwT against.

``cnnsplitter``: CNNSplitter (Qi et al., ASE 2022), the genetic search of the MwT paper's Tables
3, 4 and 8, on any registered standard model. Its modules are a ``ModuleSet`` of method
``"cnnsplitter"``, so ``mwt reuse`` and ``mwt export`` treat them like MwT's.
"""

from mwt.baselines.cnnsplitter import (
    CNNSplitterConfig,
    CNNSplitterResult,
    cnnsplitter_run,
    cnnsplitter_search,
    default_config,
)

__all__ = ["CNNSplitterConfig", "CNNSplitterResult", "cnnsplitter_run", "cnnsplitter_search",
           "default_config"]
