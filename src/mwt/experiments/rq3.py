"""RQ3 (paper section 4.2): how effective is MwT in reusing CNN modules?

For M = 2..10, a number of random M-class sub-tasks (the paper: 10 per M, drawn once with a fixed
seed; the only 10-class task is the whole task). For each, the mixed module of the M classes is
cut out of the modular model, given a new head and fine-tuned (``mwt.reuse``); we record its
kernel share (Table 5), MACs and their reduction against the model (Table 6), the standard
model's accuracy on the sub-task with its logits restricted to the M classes (M-ACC), the
module's after fine-tuning (m-ACC) and the loss M-ACC - m-ACC (Table 7), and the module's
accuracy before fine-tuning with its gates removed, kept and folded (no paper figure). Table 8:
the same sub-tasks' kernel share of CNNSplitter's modules beside MwT's, for the baseline models.
Means (± std) are over the sub-tasks of each M and the seeds. Every sub-task's result is a JSON
file under ``reuse/`` of ``--out`` (Table 8's under ``shares/``, the 10-class row's in the pairs'
records, ``mwt.experiments.pairs``), reused by the next invocation: the runs are loaded only for
what is not there, so sub-tasks finished in an earlier working session count even when their
runs are gone.
"""

import functools
import itertools
import math
import random
import time
import warnings
from dataclasses import dataclass

from mwt.errors import MwtWarning
from mwt.experiments import paper
from mwt.experiments.common import Outcome
from mwt.experiments.pairs import Pair, final_acc
from mwt.experiments.presets import REUSE_TARGET, TUNING_NOTE, VIT_TARGET_BOUNDS
from mwt.experiments.steps import is_transformer, mean_std
from mwt.experiments.tables import OURS, Column, Table, percent, pyplot, save_figure


def draw_subtasks(num_classes: int, sizes, count: int, seed: int) -> dict[int, list[tuple]]:
    """``count`` distinct random M-class sub-tasks for each M in ``sizes`` (all of them when
    there are fewer), sorted class ids, from one seeded generator: the same for every model."""
    rng = random.Random(seed)
    out = {}
    for m in sizes:
        if not 2 <= m <= num_classes:
            continue
        total = math.comb(num_classes, m)
        if total <= count:
            out[m] = list(itertools.combinations(range(num_classes), m))
            continue
        seen: list[tuple] = []
        while len(seen) < count:
            task = tuple(sorted(rng.sample(range(num_classes), m)))
            if task not in seen:
                seen.append(task)
        out[m] = seen
    return out


@dataclass
class _Loaded:
    model: object
    standard: object
    train: object
    test: object
    augment: object  # the modular run's training augmentation: fine-tuning uses the same


def _load(ws, std, mod) -> _Loaded:
    from mwt.checkpoint import load_run
    from mwt.devices import resolve_device
    from mwt.runs import run_augmentation, run_dataset

    device = resolve_device(ws.device)
    model, config = load_run(mod, device)
    standard = load_run(std, device)[0] if std is not None else None
    train = run_dataset(config, "train", ws.data_dir)
    return _Loaded(model, standard, train, run_dataset(config, "test", ws.data_dir),
                   run_augmentation(config, train))


GATE_STARTS = {"removed": {}, "kept": {"keep_gates": True}, "folded": {"fold_gates": True}}
BEFORE_KEYS = tuple(f"acc_{start}" + ("_recal" if recal else "")
                    for start in GATE_STARTS for recal in (False, True))


def finetune_tag(p) -> str:
    """The fine-tuning protocol in a result's file name, so that results of another protocol
    are never read back as this one's."""
    steps = "" if p.finetune_min_steps is None else f"-min{p.finetune_min_steps}"
    return (f"ft-e{p.finetune_epochs}-lr{p.finetune_lr:g}-span{p.finetune_cosine_span:g}-"
            f"{p.finetune_start}{'-bn' if p.finetune_recalibrate else ''}{steps}")


def reuse_one(ws, loaded: _Loaded, mods, classes) -> dict:
    """One sub-task: the fine-tuned module (started as the preset says), the module before
    fine-tuning with its gates removed, kept and folded, each also with its BatchNorm
    statistics recalibrated on the sub-task, and the standard model on the same sub-task."""
    from mwt.reuse import MIN_FINETUNE_STEPS, reuse, select_classes, subtask_accuracy

    p = ws.preset
    classes = list(classes)
    t0 = time.perf_counter()
    common = {"test_data": loaded.test, "device": ws.device, "seed": 0, "lr": p.finetune_lr,
              "augment": loaded.augment}
    steps = MIN_FINETUNE_STEPS if p.finetune_min_steps is None else p.finetune_min_steps
    before = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MwtWarning)  # a weak module is reported by its numbers
        sub = reuse(loaded.model, mods, classes, loaded.train, epochs=p.finetune_epochs,
                    min_steps=steps, cosine_span=p.finetune_cosine_span,
                    recalibrate_bn=p.finetune_recalibrate, **GATE_STARTS[p.finetune_start],
                    **common)
        for start, options in GATE_STARTS.items():
            for recal in (False, True):
                module = reuse(loaded.model, mods, classes, loaded.train, epochs=0,
                               recalibrate_bn=recal, **options, **common)
                key = f"acc_{start}" + ("_recal" if recal else "")
                before[key] = percent(module.report["acc_before_finetune"]["test"])
    r = sub.report
    std_acc = None
    if loaded.standard is not None:
        std_acc = percent(subtask_accuracy(loaded.standard, select_classes(loaded.test, classes),
                                           classes))
    module_acc = percent(r["acc_after_finetune"]["test"])
    return {"classes": classes, "m": len(classes), "kernel_share": percent(r["kernel_share"]),
            "macs": r["macs"] / 1e6, "macs_full": r["macs_full"] / 1e6,
            "reduction": percent(1 - r["macs_ratio"]),
            "unit_macs": percent(r.get("unit_block_macs_ratio")), "std_acc": std_acc,
            "module_acc": module_acc,
            "loss": None if None in (module_acc, std_acc) else std_acc - module_acc,
            **before, "finetune_epochs": r["epochs"], "finetune": finetune_tag(p),
            "seconds": time.perf_counter() - t0}


def reuse_results(ws, model, dataset, seed, subtasks) -> list[dict]:
    """Every sub-task's result for one model, dataset and seed (cached per sub-task and
    fine-tuning protocol)."""
    pair = Pair(ws, model, dataset, seed)
    folder = ws.subdir("reuse", pair.name)
    state: dict = {}

    def compute(classes):  # the runs are needed only for a sub-task not finished before
        if "loaded" not in state:
            std, mod = pair.runs()
            state["mods"] = ws.ensure_modules(mod)
            state["loaded"] = _load(ws, std, mod)
        return reuse_one(ws, state["loaded"], state["mods"], classes)

    return cached_subtasks(ws, folder, pair.name, subtasks, compute, finetune_tag(ws.preset),
                           {"model": model, "dataset": dataset, "seed": seed})


def cached_subtasks(ws, folder, run_name: str, subtasks, compute, tag: str,
                    extra: dict) -> list[dict]:
    """``compute(classes)`` for every sub-task, each result cached in ``folder`` under its M,
    classes and ``tag`` (the protocol that made it), with ``extra`` added to every row."""
    results = []
    for m, tasks in subtasks.items():
        for classes in tasks:
            path = folder / f"m{m}-c{'-'.join(map(str, classes))}-{tag}.json"
            res = ws.cached(path, functools.partial(compute, classes),
                            f"reuse {run_name}: classes {list(classes)}")
            results.append({**res, **extra})
    return results


def modular_model_rows(ws, model, dataset, seeds) -> list[dict]:
    """The paper's 10-class row of Table 7: its "module" of all classes is the modular model
    itself, so m-ACC is the modular model's test accuracy (Table 2) and M-ACC the standard's."""
    rows = []
    for seed in seeds:
        record = Pair(ws, model, dataset, seed).record()
        std_acc = final_acc(record["standard"]["history"])
        mod_acc = final_acc(record["modular"]["history"])
        rows.append({"model": model, "dataset": dataset, "seed": seed, "std_acc": std_acc,
                     "module_acc": mod_acc,
                     "loss": None if None in (std_acc, mod_acc) else std_acc - mod_acc})
    return rows


def kernel_shares(ws, model, dataset, seed, subtasks) -> list[dict]:
    """Table 8: the kernel share of MwT's and CNNSplitter's mixed modules per sub-task, kept in
    ``shares/`` of ``--out`` (as the pairs' records are) for the same sub-tasks and search."""
    pair = Pair(ws, model, dataset, seed)

    def compute():
        std, mod = pair.runs()
        mods = ws.ensure_modules(mod)
        found = ws.ensure_cnnsplitter(std)
        rows = []
        for m, tasks in subtasks.items():
            for classes in tasks:
                row = {"model": model, "dataset": dataset, "seed": seed, "m": m,
                       "classes": list(classes),
                       "mwt": percent(float(mods.kernels_for(list(classes)).float().mean()))}
                if found is not None:
                    row["cnnsplitter"] = percent(float(found[0].kernels_for(list(classes))
                                                       .float().mean()))
                rows.append(row)
        return rows

    key = {"pair": pair.record_key(), "subtasks": {str(m): t for m, t in subtasks.items()}}
    return ws.cached(ws.out / "shares" / f"{pair.name}.json", compute,
                     f"kernel shares of {pair.name}", key=key)


def _num_classes(ws, dataset) -> int:
    from mwt.data import load_dataset

    return load_dataset(dataset, "test", ws.data_dir).num_classes


def _series(model, dataset, source=OURS) -> str:
    return f"ours {model} {dataset}" if source == OURS else f"paper {paper.label(model, dataset)}"


def _summarise(results, keys) -> list[dict]:
    """Mean ± std of ``keys`` per (model, dataset, M) over sub-tasks and seeds."""
    groups: dict = {}
    for r in results:
        groups.setdefault((r["model"], r["dataset"], r["m"]), []).append(r)
    rows = []
    for (model, dataset, m), rs in groups.items():
        row = {"source": OURS, "model": model, "dataset": dataset, "m": m,
               "series": _series(model, dataset), "subtasks": len(rs)}
        for key in keys:
            row[key], row[f"{key}_std"] = mean_std([r.get(key) for r in rs])
        rows.append(row)
    return rows


def _paper_rows(table: dict, pairs, fields) -> list[dict]:
    rows = []
    for m, by_pair in table.items():
        for pm, pd in pairs:
            if (pm, pd) in by_pair:
                value = by_pair[(pm, pd)]
                values = value if isinstance(value, tuple) else (value,)
                rows.append({"source": paper.SOURCE, "model": pm, "dataset": pd, "m": m,
                             "series": _series(pm, pd, paper.SOURCE),
                             **dict(zip(fields, values))})
    return rows


def _pairs(table, combos) -> list:
    return list(dict.fromkeys(pair for model, dataset in combos
                              for pair in paper.pairs_for(table, model, dataset)))


def run(ws, models) -> Outcome:
    p = ws.preset
    reuse_models = list(models) if models else list(p.models_for("rq3"))
    share_models = ([m for m in models if m in p.baseline_models] if models
                    else list(p.models_for("rq3_baseline")))
    results, shares = [], []
    for dataset in p.datasets:
        subtasks = draw_subtasks(_num_classes(ws, dataset), p.subtask_sizes, p.subtasks,
                                 p.subtask_seed)
        for model in reuse_models:
            for seed in p.seeds:
                results += reuse_results(ws, model, dataset, seed, subtasks)
        for model in share_models:
            for seed in p.seeds:
                shares += kernel_shares(ws, model, dataset, seed, subtasks)
    combos = list(dict.fromkeys((r["model"], r["dataset"]) for r in results))
    pairs = _pairs(paper.TABLE2, combos)
    m_col = Column("m", "M-class", 0)
    summary = _summarise(results, ("kernel_share", "macs", "reduction", "unit_macs", "std_acc",
                                   "module_acc", "loss") + BEFORE_KEYS)
    whole = []  # Table 7's 10-class row in the paper's form: the modular model itself
    for model, dataset in combos:
        n = _num_classes(ws, dataset)
        for row in _summarise([{**r, "m": n} for r in
                               modular_model_rows(ws, model, dataset, p.seeds)],
                              ("std_acc", "module_acc", "loss")):
            whole.append({**row, "series": row["series"] + " (modular model)",
                          "module": "modular model (the paper's form)"})
    head = [Column("source", "source"), Column("model", "model"), Column("dataset", "dataset"),
            m_col]
    t5 = Table("table5", "Table 5: kernel share (KRR) of the modules of M-class sub-tasks, %",
               head + [Column("kernel_share", "KRR %"), Column("subtasks", "sub-tasks")],
               summary + _paper_rows(paper.TABLE5, pairs, ("kernel_share",)),
               pivot=(m_col, "series", [Column("kernel_share", "KRR %")]))
    t6 = Table("table6", "Table 6: MACs of the modules (millions) and their reduction, %",
               head + [Column("macs", "MACs (M)", 3), Column("reduction", "reduction %"),
                       Column("unit_macs", "attention+MLP MACs kept %"),
                       Column("subtasks", "sub-tasks")],
               summary + _paper_rows(paper.TABLE6, pairs, ("macs", "reduction")),
               pivot=(m_col, "series", [Column("macs", "MACs (M)", 3),
                                        Column("reduction", "reduction %")]),
               notes=["MACs count multiply-accumulates with fvcore's rules (the paper's "
                      "\"FLOPs\"); the paper's are on 3x32x32 inputs at full width.",
                      "'attention+MLP MACs kept': for a transformer, the module's share of "
                      "the MACs inside its attention (QK^T and AV included) and MLP blocks, "
                      "which heads and neurons can reduce (empty for a CNN)."])
    acc_cols = [Column("std_acc", "M-ACC %"), Column("module_acc", "m-ACC %"),
                Column("loss", "loss")]
    t7_rows = [{**r, "module": "fine-tuned mixed module"} for r in summary] + whole
    t7 = Table("table7", "Table 7: accuracy on the sub-tasks: standard model (M-ACC), "
               "fine-tuned module (m-ACC), loss (points)",
               head + [Column("module", "module")] + acc_cols + [Column("subtasks", "sub-tasks")],
               t7_rows + [{**r, "module": "modular model (Table 2)" if r["m"] == 10
                           else "fine-tuned mixed module"}
                          for r in _paper_rows(paper.TABLE7, pairs,
                                               ("std_acc", "module_acc", "loss"))],
               pivot=(m_col, "series", acc_cols),
               notes=[f"m-ACC after {p.finetune_epochs} fine-tuning epochs (at least "
                      f"{p.finetune_min_steps or 100} steps) at lr {p.finetune_lr:g}, cosine "
                      f"T_max {p.finetune_cosine_span:g} x the epochs, starting with the gates "
                      f"{p.finetune_start}"
                      f"{', BatchNorm recalibrated' if p.finetune_recalibrate else ''}; M-ACC "
                      "is the standard model with its logits restricted to the M classes.",
                      "The paper's 10-class row equals its Table 2: there the 10-class "
                      "\"module\" is the modular model itself. Ours gives that row too "
                      "(\"modular model\"), beside our fine-tuned 10-class mixed module."])
    before_cols = [Column(f"acc_{start}" + ("_recal" if recal else ""),
                          f"gates {start}" + (", BN recalibrated" if recal else ""))
                   for start in GATE_STARTS for recal in (False, True)]
    before_cols.append(Column("module_acc", "fine-tuned"))
    t_before = Table("before_finetune", "Module accuracy before fine-tuning, % (the module's "
                     "N-way logits restricted to the M classes; no paper figure)",
                     head + before_cols + [Column("subtasks", "sub-tasks")], summary,
                     pivot=(m_col, "series", before_cols))
    t8 = _table8(shares)
    if not shares:
        t8.notes.append("Empty: Table 8 compares CNNSplitter and MwT on the preset's baseline "
                        f"models ({', '.join(p.baseline_models)}), and none was selected.")
    raw = Table("subtasks", "Every sub-task", [
        Column("model", "model"), Column("dataset", "dataset"), Column("seed", "seed"),
        Column("m", "M", 0), Column("classes", "classes"), Column("kernel_share", "KRR %"),
        Column("macs", "MACs (M)", 3), Column("reduction", "reduction %"),
        Column("unit_macs", "attention+MLP MACs %"), Column("std_acc", "M-ACC %"),
        Column("module_acc", "m-ACC %"), Column("loss", "loss"),
        Column("acc_removed", "removed %"), Column("acc_kept", "kept %"),
        Column("acc_folded", "folded %"), Column("acc_removed_recal", "removed, BN recal. %"),
        Column("acc_folded_recal", "folded, BN recal. %"), Column("finetune_epochs", "epochs"),
        Column("seconds", "seconds", 1)], results, embed=False)
    return Outcome(tables=[t5, t6, t7, t_before, t8, _targets(summary, whole), raw],
                   figures=[_figure(ws, summary, pairs)],
                   notes=[f"{p.subtasks} random sub-task(s) per M (seed {p.subtask_seed}), the "
                          "same for every model; the paper draws 10 per M."]
                   + ([paper.nemo_transformer_note()]
                      if any(is_transformer(m) for m in reuse_models) else []))


def _table8(shares) -> Table:
    rows = _summarise(shares, ("cnnsplitter", "mwt"))
    combos = list(dict.fromkeys((r["model"], r["dataset"]) for r in shares))
    rows += _paper_rows(paper.TABLE8, _pairs(paper.TABLE3, combos), ("cnnsplitter", "mwt"))
    m_col = Column("m", "M-class", 0)
    cols = [Column("cnnsplitter", "CNNSplitter %"), Column("mwt", "MwT %")]
    return Table("table8", "Table 8: kernel share of the modules of M-class sub-tasks, "
                 "CNNSplitter vs MwT, %",
                 [Column("source", "source"), Column("model", "model"),
                  Column("dataset", "dataset"), m_col] + cols
                 + [Column("subtasks", "sub-tasks")], rows, pivot=(m_col, "series", cols))


VIT_UNIT_MACS = 35.0  # issue 20: a 2-class ViT module keeps <= 35% of its attention+MLP MACs


def _target_row(r: dict, metric: str, value: float, bound: float) -> dict:
    miss = value - bound
    return {"model": r["model"], "dataset": r["dataset"], "metric": metric, "value": value,
            "target": f"<= {bound:g}", "met": miss <= 0, "missed_by": max(miss, 0.0)}


def _targets(summary, whole=()) -> Table:
    """2-class reuse within the bound of the standard model; a CNN's whole-task mixed module
    within the same bound of the modular model's own loss (its accuracy at most that much below
    it; issue 16); a transformer's 2-class modules within issue 20's share of attention+MLP MACs
    and its reuse loss within issue 20's bound (issue 20 sets no whole-task target, so a ViT's
    10-class mixed module is in Table 7 only)."""
    label, bound, _ = REUSE_TARGET
    rows = []
    for r in summary:
        if r["m"] == 2 and r.get("loss") is not None:
            rows.append(_target_row(r, label, r["loss"], VIT_TARGET_BOUNDS["reuse_loss"]
                                    if is_transformer(r["model"]) else bound))
        if r["m"] == 2 and r.get("unit_macs") is not None:  # a transformer (issue 20)
            rows.append(_target_row(r, "2-class modules' attention+MLP MACs kept %",
                                    r["unit_macs"], VIT_UNIT_MACS))
    for w in whole:
        if is_transformer(w["model"]):  # issue 20 sets no whole-task bound for a ViT
            continue
        mixed = next((r for r in summary if (r["model"], r["dataset"], r["m"])
                      == (w["model"], w["dataset"], w["m"])), None)
        if mixed is None or None in (mixed.get("module_acc"), w.get("module_acc")):
            continue
        gap = w["module_acc"] - mixed["module_acc"]  # the modular model minus the mixed module
        rows.append(_target_row(w, f"{w['m']}-class mixed module below the modular model "
                                "(points)", gap, bound))
    return Table("targets", "Target of the CPU preset (ours, not the paper's)", [
        Column("model", "model"), Column("dataset", "dataset"), Column("metric", "metric"),
        Column("value", "value", 4), Column("target", "target"), Column("met", "met"),
        Column("missed_by", "missed by", 4)], rows,
        notes=["Mean over the 2-class sub-tasks of M-ACC - m-ACC (issue 10's target for vgg16 "
               "and resnet18 at the cpu preset); the whole task's fine-tuned mixed module "
               "against the modular model it was cut from (issue 16; CNNs only: a ViT's is "
               "in Table 7).", TUNING_NOTE])


def _figure(ws, summary, pairs):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = (("kernel_share", "kernel share (KRR) %", paper.TABLE5, lambda v: v),
              ("reduction", "MACs reduction %", paper.TABLE6, lambda v: v[1]),
              ("loss", "accuracy loss M-ACC - m-ACC (points)", paper.TABLE7, lambda v: v[2]))
    series = list(dict.fromkeys(r["series"] for r in summary))
    for ax, (key, label, ref, pick) in zip(axes, panels):
        for s in series:
            rs = sorted((r for r in summary if r["series"] == s), key=lambda r: r["m"])
            ax.plot([r["m"] for r in rs], [r[key] for r in rs], "-o", markersize=3, label=s)
        for i, pair in enumerate(pairs):
            ms = sorted(m for m in ref if pair in ref[m])
            ax.plot(ms, [pick(ref[m][pair]) for m in ms], ("--", ":", "-.")[i % 3],
                    color="grey", alpha=0.7, label=f"paper {paper.label(*pair)} (GPU)")
        ax.set_xlabel("M (classes of the sub-task)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("RQ3: reusing modules of M-class sub-tasks (ours solid; the paper's grey, "
                 "dashed or dotted)")
    path = save_figure(fig, ws.out / "rq3-reuse.png")
    return ("RQ3: kernel share, MACs reduction and accuracy loss of the fine-tuned modules per "
            "M; ours solid, the paper's (GPU, CIFAR-10/SVHN) dashed", path)
