"""A seed's standard and modular runs, and the record the RQs read of them.

Training runs live in ``--runs``, and a working session that ends on another machine loses
them. What RQ1-RQ3 read of a finished pair is small: each run's per-epoch history, the metrics
of the modular run's modules at the preset's tau, and CNNSplitter's report for the baseline
models. So it is kept as a JSON record in the experiment's own ``--out``
(``pairs/<modular run>.json``), beside the tables it makes. An experiment started again in a
new session, with ``--runs`` empty, trains only the seeds it had not finished: a pair whose
record is there counts even when its runs are gone. A record is read back only when it was made
with the same run settings, tau and CNNSplitter search (its ``key``); otherwise the pair's runs
are found, resumed or trained again and the record is made anew.
"""

import functools
import math
from dataclasses import dataclass
from pathlib import Path

from mwt.experiments.common import _now, environment
from mwt.experiments.steps import WHERE_THE_DATA_ARE, history
from mwt.experiments.tables import percent

PAIRS = "pairs"  # the records' folder in an experiment's --out


@dataclass(frozen=True)
class Pair:
    """The standard and the modular (MwT) run of one model, dataset and seed of a Workspace's
    preset."""

    ws: object
    model: str
    dataset: str
    seed: int

    @functools.cached_property
    def specs(self):
        """(standard, modular) RunSpecs."""
        return tuple(self.ws.spec(self.model, self.dataset, standard=standard, seed=self.seed)
                     for standard in (True, False))

    @functools.cached_property
    def name(self) -> str:
        """The modular run's name: the record's, and its reuse results' folder's."""
        return self.ws.run_name(self.specs[1])

    @property
    def has_baseline(self) -> bool:
        return self.model in self.ws.preset.baseline_models

    def runs(self) -> tuple[Path, Path]:
        """The finished (standard, modular) run directories: found, resumed or trained."""
        std, mod = self.specs
        return self.ws.ensure_run(std), self.ws.ensure_run(mod)

    def record(self) -> dict:
        """What the RQs read of this pair (see the module's docstring), made once."""
        made = []

        def make():
            made.append(True)
            return self._make()

        record = self.ws.cached(self.ws.out / PAIRS / f"{self.name}.json", make,
                                f"recording {self.name}", key=self.record_key())
        if not made and self.name not in self.ws.recorded:
            self.ws.recorded.append(self.name)
        return record

    # -- how a record is made --------------------------------------------------------------

    def record_key(self) -> dict:
        """The settings a record depends on: the runs', tau and CNNSplitter's search."""
        from mwt.baselines import default_config

        def settings(spec):
            return {k: v for k, v in spec.to_dict().items() if k not in WHERE_THE_DATA_ARE}

        std, mod = self.specs
        search = (default_config(**self.ws.preset.cnnsplitter).to_dict()
                  if self.has_baseline else None)
        return {"standard": settings(std), "modular": settings(mod), "tau": self.ws.preset.tau,
                "cnnsplitter": search}

    def _make(self) -> dict:
        std, mod = self.runs()
        mods = self.ws.ensure_modules(mod)
        found = self.ws.ensure_cnnsplitter(std) if self.has_baseline else None
        return {
            "standard": {"run": std.name, "history": history(std)},
            "modular": {"run": mod.name, "history": history(mod)},
            "modules": {"tau": mods.tau, "krr": _number(mods.krr),
                        "cohesion": _number(mods.cohesion), "coupling": _number(mods.coupling),
                        "kernels": int(mods.total_kernels),
                        "seconds": _number(mods.seconds.get("total", 0.0))},
            "cnnsplitter": None if found is None else found[1],
            "made": {"at": _now(), "environment": environment()},
        }


def _number(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def final_acc(history_records: list[dict]) -> float | None:
    """The test accuracy (%) after the last epoch of a run's history."""
    return percent(history_records[-1].get("test_acc")) if history_records else None


def pair_results(record: dict) -> dict:
    """The per-seed figures of Table 2 from a pair's record."""
    mods = record["modules"]
    return {"standard_acc": final_acc(record["standard"]["history"]),
            "modular_acc": final_acc(record["modular"]["history"]),
            "krr": percent(mods["krr"]), "cohesion": mods["cohesion"],
            "coupling": mods["coupling"], "kernels": mods["kernels"]}
