"""The methods comparison (``mwt experiment methods``): MwT, NeMo and MODA side by side on the
same models, data, modularizing pass, extraction and reuse.

For each model and dataset: a standard run and one modular run per method (``mwt.methods``),
each modularized by its own rule at the preset's tau; the table ``methods`` gives their test
accuracy, KRR, cohesion, coupling and training seconds per epoch against the standard run's
(runs trained in one invocation run on the same machine; a run found on disk keeps the times
it was trained with). For ``methods_subtask_sizes`` (2, 3, 5 classes) and the preset's random
sub-tasks, the table ``methods_reuse`` gives each method's module: kernel share, MACs, accuracy
before fine-tuning (each method's own composition: MwT and NeMo the module's N-way logits
restricted to the target classes, MODA its target rows) and after (where the method fine-tunes:
the preset's RQ3 fine-tuning), and the standard model on the same sub-task. The published
figures of the MODA and NeMo papers stand beside ours, labelled.
"""

import statistics
import time
import warnings

from mwt.errors import MwtWarning
from mwt.experiments import paper
from mwt.experiments.common import Outcome
from mwt.experiments.pairs import final_acc
from mwt.experiments.rq3 import (
    GATE_STARTS,
    _load,
    _num_classes,
    cached_subtasks,
    draw_subtasks,
    finetune_tag,
)
from mwt.experiments.steps import history, mean_std
from mwt.experiments.tables import OURS, Column, Table, percent, pyplot, save_figure

# The cpu preset's targets (issue 18).
MODA_REUSE_TARGET = 1.0   # points: MODA's 2-class modules against the standard model, no FT
MODA_EPOCH_TARGET = 1.05  # MODA's epoch time against the standard epoch


def epoch_seconds(run) -> float | None:
    """Mean seconds of a run's training epochs (validation included, tracking not)."""
    times = [r["seconds"] for r in history(run) if isinstance(r.get("seconds"), (int, float))]
    return statistics.fmean(times) if times else None


def reuse_subtask(ws, loaded, mods, classes) -> dict:
    """One sub-task's module, composed the method's way; the standard model beside it."""
    from mwt.reuse import (
        MIN_FINETUNE_STEPS,
        composition_of,
        reuse,
        select_classes,
        subtask_accuracy,
    )

    p = ws.preset
    classes = list(classes)
    t0 = time.perf_counter()
    options = {"test_data": loaded.test, "device": ws.device, "seed": 0,
               "augment": loaded.augment}
    if composition_of(mods) == "head":
        steps = MIN_FINETUNE_STEPS if p.finetune_min_steps is None else p.finetune_min_steps
        options.update(epochs=p.finetune_epochs, lr=p.finetune_lr, min_steps=steps,
                       cosine_span=p.finetune_cosine_span,
                       recalibrate_bn=p.finetune_recalibrate, **GATE_STARTS[p.finetune_start])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MwtWarning)  # a weak module is reported by its numbers
        r = reuse(loaded.model, mods, classes, loaded.train, **options).report
    std_acc = percent(subtask_accuracy(loaded.standard, select_classes(loaded.test, classes),
                                       classes))
    before, after = (percent(r["acc_before_finetune"]["test"]),
                     percent(r["acc_after_finetune"]["test"]))
    final = after if after is not None else before
    return {"classes": classes, "m": len(classes), "method": mods.method,
            "composition": r["composition"], "kernel_share": percent(r["kernel_share"]),
            "macs_ratio": percent(r["macs_ratio"]), "params_ratio": percent(r["params_ratio"]),
            "acc_before": before, "acc_after": after, "std_acc": std_acc,
            "loss": None if final is None or std_acc is None else std_acc - final,
            "finetune_epochs": r["epochs"], "seconds": time.perf_counter() - t0}


def _reuse_tag(ws, mods) -> str:
    from mwt.reuse import composition_of

    return finetune_tag(ws.preset) if composition_of(mods) == "head" else "rows"


def method_results(ws, model, dataset, seed, subtasks) -> tuple[dict, list[dict]]:
    """The standard run, every method's run and module set, and their sub-task modules."""
    std = ws.ensure_run(ws.spec(model, dataset, standard=True, seed=seed))
    std_seconds = epoch_seconds(std)
    rows, reuse_rows = {}, []
    for name in ws.preset.methods:
        run = ws.ensure_run(ws.spec(model, dataset, standard=False, seed=seed, method=name))
        mods = ws.ensure_modules(run)
        seconds = epoch_seconds(run)
        rows[name] = {"source": OURS, "model": model, "dataset": dataset, "method": name,
                      "standard_acc": final_acc(history(std)),
                      "modular_acc": final_acc(history(run)),
                      "krr": percent(mods.krr), "cohesion": mods.cohesion,
                      "coupling": mods.coupling, "epoch_seconds": seconds,
                      "standard_epoch_seconds": std_seconds,
                      "epoch_ratio": (seconds / std_seconds if seconds and std_seconds
                                      else None), "run": run.name}
        rows[name]["acc_loss"] = rows[name]["standard_acc"] - rows[name]["modular_acc"]
        folder = ws.subdir("reuse", run.name)
        state: dict = {}

        def compute(classes, run=run, mods=mods, state=state):
            if "loaded" not in state:
                state["loaded"] = _load(ws, std, run)
            return reuse_subtask(ws, state["loaded"], mods, classes)

        reuse_rows += cached_subtasks(ws, folder, run.name, subtasks, compute,
                                      _reuse_tag(ws, mods),
                                      {"model": model, "dataset": dataset, "seed": seed})
    return rows, reuse_rows


def _summary(reuse_rows) -> list[dict]:
    groups: dict = {}
    for r in reuse_rows:
        groups.setdefault((r["model"], r["dataset"], r["method"], r["m"]), []).append(r)
    out = []
    for (model, dataset, method, m), rs in sorted(groups.items()):
        row = {"source": OURS, "model": model, "dataset": dataset, "method": method, "m": m,
               "composition": rs[0]["composition"], "subtasks": len(rs)}
        for key in ("kernel_share", "macs_ratio", "acc_before", "acc_after", "std_acc",
                    "loss"):
            row[key], row[f"{key}_std"] = mean_std(r.get(key) for r in rs)
        out.append(row)
    return out


def _published_rows() -> list[dict]:
    ref = paper.MODA_VGG16_CIFAR10
    hours = ref["standard"]["hours"]
    rows = []
    for name in ("mwt", "moda"):
        rows.append({"source": paper.MODA_SOURCE, "model": "vgg16", "dataset": "cifar10",
                     "method": name, "standard_acc": ref["standard"]["acc"],
                     "standard_acc_std": ref["standard"]["acc_std"],
                     "modular_acc": ref[name]["acc"], "modular_acc_std": ref[name]["acc_std"],
                     "acc_loss": ref["standard"]["acc"] - ref[name]["acc"],
                     "epoch_ratio": ref[name]["hours"] / hours})
    return rows


def methods_table(rows) -> Table:
    return Table("methods_training", "Methods: standard and modular training, modules at tau", [
        Column("source", "source"), Column("model", "model"), Column("dataset", "dataset"),
        Column("method", "method"), Column("standard_acc", "standard ACC %"),
        Column("modular_acc", "modular ACC %"), Column("acc_loss", "ACC loss (points)"),
        Column("krr", "KRR %"), Column("cohesion", "cohesion", 4),
        Column("coupling", "coupling", 4), Column("epoch_seconds", "s / epoch", 1),
        Column("epoch_ratio", "x standard epoch", 2)], rows,
        notes=["KRR, cohesion and coupling are each method's modules by its own rule at the "
               "preset's tau (MwT, NeMo: the tau rule; MODA: the activation rate, with at "
               "least 0.5% of each layer), on the same units (every conv kernel but the "
               "first conv's) and with the same Eq. 1-3.",
               f"{paper.MODA_SOURCE} rows: its own re-run of MwT beside MODA (VGG16-CIFAR10, "
               "200 epochs on a GPU); its 'x standard epoch' is the ratio of whole-run hours.",
               f"{paper.NEMO_SOURCE} reports, averaged over its models, modules "
               f"{paper.NEMO_CLAIMS['module_size_reduction_vs_mwt']}% smaller than MwT's and "
               f"+{paper.NEMO_CLAIMS['module_acc_gain_vs_mwt']} points of module accuracy."])


def reuse_table(summary) -> Table:
    return Table("methods_reuse", "Methods: sub-task modules (mean ± std over sub-tasks)", [
        Column("source", "source"), Column("model", "model"), Column("dataset", "dataset"),
        Column("method", "method"), Column("m", "M"), Column("composition", "composed by"),
        Column("kernel_share", "kernels %"), Column("macs_ratio", "MACs %"),
        Column("acc_before", "ACC before FT %"), Column("acc_after", "ACC after FT %"),
        Column("std_acc", "standard model %"), Column("loss", "loss (points)"),
        Column("subtasks", "sub-tasks")], summary,
        notes=["'composed by': head = a new head, fine-tuned with the preset's RQ3 fine-tuning "
               "(MwT, NeMo); rows = the target classes' rows of the last layer, no fine-tuning "
               "(MODA). ACC before FT is each method's module as composed, before any "
               "fine-tuning. The loss is the standard model's accuracy on the sub-task minus "
               "the module's final one (after fine-tuning where the method fine-tunes)."])


def targets_table(rows, summary, preset_name) -> Table:
    out = []
    for key, row in rows.items():
        model, dataset = key
        moda, mwt_row, nemo = row.get("moda"), row.get("mwt"), row.get("nemo")
        two = {r["method"]: r for r in summary if r["model"] == model
               and r["dataset"] == dataset and r["m"] == 2}
        if moda is not None and "moda" in two:
            loss = two["moda"]["loss"]
            out.append({"model": model, "dataset": dataset,
                        "target": "MODA 2-class modules without fine-tuning: loss vs standard "
                                  f"<= {MODA_REUSE_TARGET} point",
                        "ours": loss, "met": _yes(loss is not None
                                                  and loss <= MODA_REUSE_TARGET)})
        if moda is not None:
            ratio = moda["epoch_ratio"]
            out.append({"model": model, "dataset": dataset,
                        "target": f"MODA epoch <= {MODA_EPOCH_TARGET}x the standard epoch",
                        "ours": ratio, "met": _yes(ratio is not None
                                                   and ratio <= MODA_EPOCH_TARGET)})
        if nemo is not None and mwt_row is not None:
            smaller = nemo["krr"] < mwt_row["krr"]
            no_worse = nemo["acc_loss"] <= mwt_row["acc_loss"]
            out.append({"model": model, "dataset": dataset,
                        "target": "NeMo modules smaller than MwT's (KRR) with no more "
                                  "accuracy loss",
                        "ours": nemo["krr"] - mwt_row["krr"], "met": _yes(smaller and no_worse)})
    return Table("methods_targets", f"Methods: the {preset_name} preset's targets", [
        Column("model", "model"), Column("dataset", "dataset"), Column("target", "target"),
        Column("ours", "ours"), Column("met", "met")], out,
        notes=["NeMo's 'ours' is its KRR minus MwT's (points; negative: smaller modules)."])


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def _figure(ws, summary):
    plt = pyplot()
    series = sorted({(r["model"], r["dataset"]) for r in summary})
    fig, axes = plt.subplots(len(series), 2, figsize=(10, 3.4 * len(series)), squeeze=False)
    for (model, dataset), (acc_ax, share_ax) in zip(series, axes):
        for method in ws.preset.methods:
            rs = sorted((r for r in summary if (r["model"], r["dataset"], r["method"])
                         == (model, dataset, method)), key=lambda r: r["m"])
            if not rs:
                continue
            ms = [r["m"] for r in rs]
            final = [r["acc_after"] if r["acc_after"] is not None else r["acc_before"]
                     for r in rs]
            acc_ax.plot(ms, final, marker="o", label=method)
            share_ax.plot(ms, [r["kernel_share"] for r in rs], marker="o", label=method)
        std = sorted({(r["m"], r["std_acc"]) for r in summary
                      if (r["model"], r["dataset"]) == (model, dataset) and r["method"] ==
                      ws.preset.methods[0]})
        if std:
            acc_ax.plot([m for m, _ in std], [a for _, a in std], "k--", label="standard model")
        acc_ax.set(title=f"{model} / {dataset}: module accuracy", xlabel="classes (M)",
                   ylabel="test accuracy %")
        share_ax.set(title=f"{model} / {dataset}: module size", xlabel="classes (M)",
                     ylabel="kernels kept %")
        acc_ax.legend(fontsize=8)
        share_ax.legend(fontsize=8)
    fig.suptitle("Sub-task modules of each method (means over sub-tasks)")
    path = save_figure(fig, ws.out / "methods.png")
    return ("Each method's sub-task modules: accuracy (after fine-tuning for MwT and NeMo, as "
            "composed for MODA) and kept kernels, against the number of classes.", path)


def run(ws, models) -> Outcome:
    p = ws.preset
    models = models or list(p.models_for("methods"))
    rows, reuse_rows = {}, []
    for model in models:
        for dataset in p.datasets:
            subtasks = draw_subtasks(_num_classes(ws, dataset), p.methods_subtask_sizes,
                                     p.subtasks, p.subtask_seed)
            for seed in p.seeds[:1]:
                found, reused = method_results(ws, model, dataset, seed, subtasks)
                rows[(model, dataset)] = found
                reuse_rows += reused
    table_rows = [r for found in rows.values() for r in found.values()] + _published_rows()
    summary = _summary(reuse_rows)
    notes = [f"Seed {p.seeds[0]}; {p.subtasks} random sub-task(s) per M (seed "
             f"{p.subtask_seed}), the same for every method. Every method trains with the "
             "preset's epochs, batch, lr and augmentation; its loss weights are its own "
             "defaults (docs/methods.md)."]
    figures = [_figure(ws, summary)] if summary else []
    raw = Table("methods_subtasks", "Methods: every sub-task", [
        Column("model", "model"), Column("method", "method"), Column("m", "M"),
        Column("classes", "classes"), Column("kernel_share", "kernels %"),
        Column("macs_ratio", "MACs %"), Column("acc_before", "before FT %"),
        Column("acc_after", "after FT %"), Column("std_acc", "standard %"),
        Column("loss", "loss")], reuse_rows, embed=False)
    return Outcome(tables=[methods_table(table_rows), reuse_table(summary),
                           targets_table(rows, summary, p.name), raw],
                   figures=figures, notes=notes)
