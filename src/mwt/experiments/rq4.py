"""RQ4 (paper section 4.2): how do alpha, beta and tau influence MwT?

Alpha and beta: one modular run per alpha (beta at its Table 1 value) and per beta (alpha at
its Table 1 value); Figure 6 draws their per-epoch coupling loss, cohesion loss (training
means) and test accuracy, and a table lists their final values and their modules at tau 0.9.
Tau: the base run (Table 1 alpha and beta) is modularized at every tau of the preset (module
sets of different tau live side by side in the run directory, ``modules-tau0.10.*`` ...); for
each, the modules' KRR, cohesion and coupling, and a ``rq4_classes``-class reuse (the same
classes for every tau, drawn with the sub-task seed) with its kernel share and fine-tuned
accuracy. The paper does this on ResNet18-CIFAR10 only; RQ4 uses the preset's first dataset.
"""

import functools
import random

from mwt.experiments import paper
from mwt.experiments.common import Outcome
from mwt.experiments.rq1 import curves
from mwt.experiments.rq3 import _load, _num_classes, finetune_tag, reuse_one
from mwt.experiments.steps import fmt_number, history, mean_std
from mwt.experiments.tables import OURS, Column, Table, percent, pyplot, save_figure


def run(ws, models) -> Outcome:
    p = ws.preset
    models = models or list(p.models_for("rq4"))
    dataset = p.datasets[0]
    sweep_rows, tau_rows, figures = [], [], []
    num_classes = _num_classes(ws, dataset)
    classes = tuple(sorted(random.Random(p.subtask_seed).sample(range(num_classes),
                                                                min(p.rq4_classes,
                                                                    num_classes))))
    for model in models:
        a0, b0 = p.alpha_beta_for(model, dataset)
        sweeps = {"alpha": [(a, b0) for a in p.alphas], "beta": [(a0, b) for b in p.betas]}
        runs: dict = {}  # (alpha, beta) -> one run per seed; the base pair is in both sweeps
        for alpha, beta in dict.fromkeys(sweeps["alpha"] + sweeps["beta"]):
            runs[(alpha, beta)] = [ws.ensure_run(ws.spec(model, dataset, standard=False,
                                                         seed=seed, alpha=alpha, beta=beta))
                                   for seed in p.seeds]
        for weight, settings in sweeps.items():
            for alpha, beta in settings:
                sweep_rows.append(_sweep_row(ws, model, dataset, weight, alpha, beta,
                                             runs[(alpha, beta)]))
        figures.append(_figure6(ws, model, dataset, sweeps, runs))
        base = runs[(a0, b0)] if (a0, b0) in runs else [
            ws.ensure_run(ws.spec(model, dataset, standard=False, seed=s)) for s in p.seeds]
        tau_rows += _tau_sweep(ws, model, dataset, base, classes)
    tau_rows += [{"source": paper.SOURCE, "model": paper.RQ4_MODEL[0],
                  "dataset": paper.RQ4_MODEL[1], "tau": tau, **values}
                 for tau, values in paper.RQ4_TAU.items()]
    figures.append(_tau_figure(ws, tau_rows))
    t_sweep = Table("alpha_beta", "Alpha and beta: final epoch of each modular run, and its "
                    "modules at tau 0.9", [
                        Column("source", "source"), Column("model", "model"),
                        Column("dataset", "dataset"), Column("weight", "varied"),
                        Column("alpha", "alpha"), Column("beta", "beta"),
                        Column("coupling_loss", "coupling loss", 4),
                        Column("cohesion_loss", "cohesion loss", 4),
                        Column("test_acc", "test ACC %"), Column("krr", "KRR %"),
                        Column("cohesion", "cohesion", 4), Column("coupling", "coupling", 4),
                        Column("seeds", "seeds")], sweep_rows,
                    notes=["The paper gives these only as curves (Figure 6, ResNet18-CIFAR10): "
                           + paper.FIGURE6])
    t_tau = Table("tau", f"Tau: the modules, and a {len(classes)}-class reuse (classes "
                  f"{', '.join(map(str, classes))}) at each tau", [
                      Column("source", "source"), Column("model", "model"),
                      Column("dataset", "dataset"), Column("tau", "tau"),
                      Column("krr", "KRR %"), Column("cohesion", "cohesion", 4),
                      Column("coupling", "coupling", 4),
                      Column("reuse_kernel_share", "reuse KRR %"),
                      Column("reuse_acc", "reuse ACC %"), Column("seeds", "seeds")], tau_rows,
                  notes=[f"The paper's rows ({paper.SOURCE}) are ResNet18-CIFAR10, which it "
                         "prints for tau 0.1 and 0.9 only; its 3-class sub-task is not named."])
    return Outcome(tables=[t_sweep, t_tau], figures=figures,
                   notes=[f"RQ4 runs on {dataset}; alpha and beta are varied one at a time "
                          "around the Table 1 values of each model and dataset."])


def _sweep_row(ws, model, dataset, weight, alpha, beta, runs) -> dict:
    finals, modules = [], []
    for run in runs:
        finals.append(history(run)[-1])
        modules.append(ws.ensure_modules(run))
    row = {"source": OURS, "model": model, "dataset": dataset, "weight": weight,
           "alpha": alpha, "beta": beta, "seeds": len(runs)}
    for key, values in (("coupling_loss", [f.get("train_coupling_loss") for f in finals]),
                        ("cohesion_loss", [f.get("train_cohesion_loss") for f in finals]),
                        ("test_acc", [percent(f.get("test_acc")) for f in finals]),
                        ("krr", [percent(m.krr) for m in modules]),
                        ("cohesion", [m.cohesion for m in modules]),
                        ("coupling", [m.coupling for m in modules])):
        row[key], row[f"{key}_std"] = mean_std(values)
    return row


def _tau_sweep(ws, model, dataset, runs, classes) -> list[dict]:
    p = ws.preset
    per_tau: dict = {}
    for run in runs:
        state: dict = {}

        def compute(mods, run=run, state=state):
            if "loaded" not in state:
                state["loaded"] = _load(ws, None, run)
            return reuse_one(ws, state["loaded"], mods, classes)

        for tau in p.taus:
            mods = ws.ensure_modules(run, tau)
            path = ws.subdir("reuse", run.name) / (f"tau{fmt_number(tau)}-c"
                                                   f"{'-'.join(map(str, classes))}-"
                                                   f"{finetune_tag(p)}.json")
            res = ws.cached(path, functools.partial(compute, mods),
                            f"reuse {run.name} at tau {tau:g}: classes {list(classes)}")
            per_tau.setdefault(tau, []).append({
                "krr": percent(mods.krr), "cohesion": mods.cohesion,
                "coupling": mods.coupling, "reuse_kernel_share": res["kernel_share"],
                "reuse_acc": res["module_acc"]})
    rows = []
    for tau, values in per_tau.items():
        row = {"source": OURS, "model": model, "dataset": dataset, "tau": tau,
               "seeds": len(values)}
        for key in ("krr", "cohesion", "coupling", "reuse_kernel_share", "reuse_acc"):
            row[key], row[f"{key}_std"] = mean_std([v[key] for v in values])
        rows.append(row)
    return rows


FIGURE6_PANELS = (("train_coupling_loss", "coupling loss"),
                  ("train_cohesion_loss", "cohesion loss"), ("test_acc", "test accuracy"))


def _figure6(ws, model, dataset, sweeps, runs):
    plt = pyplot()
    fig, axes = plt.subplots(3, 2, figsize=(10, 9), sharex=True)
    for col, (weight, settings) in enumerate(sweeps.items()):
        for alpha, beta in settings:
            value = alpha if weight == "alpha" else beta
            for row, (key, label) in enumerate(FIGURE6_PANELS):
                xs, ys = curves([history(r) for r in runs[(alpha, beta)]], key)
                axes[row][col].plot(xs, ys, "-o", markersize=3, label=f"{weight} = {value:g}")
                axes[row][col].set_ylabel(label)
                axes[row][col].grid(alpha=0.3)
        axes[0][col].set_title(f"varying {weight}")
        axes[0][col].legend(fontsize=8)
        axes[-1][col].set_xlabel("epoch")
    fig.suptitle(f"Figure 6: modular training of {model} on {dataset} (ours)")
    path = save_figure(fig, ws.out / f"figure6-{model}-{dataset}.png")
    return (f"Figure 6 ({model}, {dataset}): coupling loss, cohesion loss and test accuracy per "
            f"epoch for each alpha (left) and beta (right). Paper: {paper.FIGURE6}", path)


def _tau_figure(ws, tau_rows):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = ((("krr", "modules' KRR"), ("reuse_kernel_share", "reuse KRR")), "%",
              (("cohesion", "cohesion"), ("coupling", "coupling")), "Jaccard",
              (("reuse_acc", "reuse accuracy"),), "%")
    groups = list(dict.fromkeys((r["source"], r["model"], r["dataset"]) for r in tau_rows))
    for i, ax in enumerate(axes):
        keys, unit = panels[2 * i], panels[2 * i + 1]
        for source, model, dataset in groups:
            rs = sorted((r for r in tau_rows if (r["source"], r["model"], r["dataset"])
                         == (source, model, dataset)), key=lambda r: r["tau"])
            for key, label in keys:
                who = "ours" if source == OURS else "paper"
                ax.plot([r["tau"] for r in rs], [r.get(key) for r in rs],
                        "-o" if source == OURS else "--s", markersize=3,
                        label=f"{label}, {who} {model}-{dataset}")
        ax.set_xlabel("tau")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("RQ4: the threshold tau (ours solid; paper ResNet18-CIFAR10, GPU, dashed)")
    path = save_figure(fig, ws.out / "rq4-tau.png")
    return ("RQ4: KRR, cohesion, coupling and the reuse's kernel share and accuracy against "
            "tau", path)
