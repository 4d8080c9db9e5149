"""The paper's evaluation (section 4, RQ1-RQ4) as commands: ``mwt experiment`` and
``mwt report``.

``run_experiment("rq1", preset="cpu", out="reports/rq1")`` trains, modularizes, reuses and
searches what RQ1 needs (each step once, kept on disk, resumed after a kill) and writes its
tables (CSV + Markdown) and figures (PNG) with the paper's published figures beside ours;
``build_report("reports")`` gathers every RQ found there into ``reports/report.md``.

Files: ``presets`` (micro, cpu, paper), ``paper`` (the published numbers), ``steps`` (runs,
module sets, CNNSplitter searches and JSON results, each made once), ``tables`` (CSV / Markdown /
PNG), ``rq1`` ... ``rq4`` (one per research question), ``common`` (options, locking, the RQ page)
and ``report``.
"""

from mwt.experiments.common import run_experiment
from mwt.experiments.presets import PRESETS, RQS, Preset, get_preset
from mwt.experiments.report import build_report

__all__ = ["run_experiment", "build_report", "PRESETS", "RQS", "Preset", "get_preset"]
