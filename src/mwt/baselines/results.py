"""What a finished CNNSplitter search found: its best generation's modules as a
:class:`~mwt.modularize.ModuleSet`, and the report that Tables 3, 4 and 8 read (test accuracies,
KRR, cohesion both ways, coupling, module MACs, the search's times and history).

Apart from the search itself (:mod:`mwt.baselines.cnnsplitter`) because it measures the modules
the way MwT's are measured (paper section 4.2) rather than searching for them.
"""

import time

import torch
import torch.nn.functional as F

from mwt.baselines.cohesion import reference_cohesion
from mwt.baselines.probe import composed_predictions
from mwt.baselines.search_files import METHOD, SearchState
from mwt.baselines.settings import CNNSplitterConfig
from mwt.data import as_tensors
from mwt.extract import extract_module
from mwt.macs import count_macs
from mwt.metrics import jaccard_cohesion, jaccard_coupling, kernel_retention_rate
from mwt.model_info import model_config
from mwt.modularize import ModuleSet, collect_kernel_sets
from mwt.train import evaluate


def search_results(model, search, state: SearchState, train_data, test_data, names,
                   config: CNNSplitterConfig, device, stopped: str) -> tuple[ModuleSet, dict]:
    """The modules of ``state``'s best generation as a ModuleSet, and the report: test
    accuracies, KRR, cohesion and coupling (paper section 4.2: the standard model's kernel sets
    on the training samples, restricted to each module), MACs and search time. ``search``: the
    search that ran (a ``cnnsplitter._Search``), for its scoring and layout."""
    t0 = time.perf_counter()
    masks = state.best_masks
    c = len(names)
    x_test, y_test = as_tensors(test_data)
    logits = search.logits(masks, torch.arange(c), x=x_test.to(device), desc="test set")
    composed_test = float((composed_predictions(logits) == y_test.to(device)).double().mean())
    standard_test = evaluate(model, test_data, device=device)["acc"]
    sets, labels, _ = collect_kernel_sets(model, train_data, config.batch_size, device)
    counts = torch.bincount(labels, minlength=c)
    frequencies = (F.one_hot(labels, c).double().T @ sets.double()) / counts.clamp(min=1)[:, None]
    cohesion = float(jaccard_cohesion(sets, labels, module_masks=masks))
    cohesion_ref, cohesion_ref_classes = reference_cohesion(model, masks, test_data,
                                                            config.batch_size, device)
    coupling = float(jaccard_coupling(masks))
    krr = kernel_retention_rate(masks)
    shape = tuple(int(v) for v in x_test.shape[1:])
    full = count_macs(model, shape)
    macs = [count_macs(extract_module(model, masks[i]), shape) / full for i in range(c)]
    structure = search.structure
    seconds = {"importance": state.seconds["importance"],
               "sensitivity": state.seconds["sensitivity"],
               "generations": sum(h["seconds"] for h in state.history),
               "total": state.searched_seconds, "figures": time.perf_counter() - t0}
    notes = list(state.info.get("warnings", []))
    mods = ModuleSet(
        masks=masks, layers=[(layer.conv, layer.kernels) for layer in structure.layers],
        tau=None, frequencies=frequencies.float(),
        gate_means=torch.ones(c, masks.shape[1]),  # a standard model has no gates: scale 1
        counts=counts, layer_tau=torch.zeros(c, len(structure.layers)), classes=list(names),
        cohesion=cohesion, coupling=coupling, krr=krr, seconds=seconds,
        model={**model_config(model), "modular": False}, warnings=notes, method=METHOD)
    groups = structure.group_names()
    report = {
        "method": METHOD,
        "standard_acc": {"test": standard_test, "search": state.info["standard_acc"]},
        "composed_acc": {"test": composed_test, "search": state.best["acc"]},
        "krr": krr, "cohesion": cohesion, "coupling": coupling,
        "cohesion_reference": cohesion_ref,
        "cohesion_reference_per_class": cohesion_ref_classes,
        "difference": state.best["diff"], "score": state.best["score"],
        "macs_ratio": sum(macs) / c, "module_macs_ratio": macs,
        "kernels_per_module": masks.sum(1).tolist(), "total_kernels": int(masks.shape[1]),
        "search_seconds": state.searched_seconds,
        "seconds": {**seconds, "per_generation": [h["seconds"] for h in state.history]},
        "generations_run": len(state.history), "best_generation": state.best["generation"],
        "stopped_by": stopped, "budget_minutes": config.budget_minutes,
        "layers": {"segments": groups, "genes": list(search.layout.genes),
                   "sensitivity_acc": state.sensitivity,
                   "sensitive": [groups[i] for i in range(len(groups))
                                 if bool(state.sensitive[i])],
                   "tied": [g for g in groups if "+" in g]},
        "search_split": {"samples": len(search.y), "fraction": config.search_fraction,
                         "seed": config.split_seed},
        "history": state.history, "warnings": notes, "config": config.to_dict(),
    }
    return mods, report
