"""RQ2 (paper section 4.2): how efficient is MwT in training and modularizing CNN models?

Table 4: MwT's cost (modular training, seconds per epoch x epochs, plus modularizing) against
modularizing after training (standard training plus CNNSplitter's search, seconds per generation
x generations), and their totals in minutes. Seconds per epoch are the mean of the runs'
``metrics.jsonl`` epochs (training plus the test-set evaluation, without modularity tracking);
modularizing is the pass that made the tau 0.9 module set; the search time is CNNSplitter's own
(importance, sensitivity and every generation). The paper's own form of the search time is
seconds per generation x the *best* generation (the configs' ``best_generation``: 123, 79, 185,
107), which leaves out the generations searched after the best and the preprocessing; it is its
own column ("paper form"), beside ours. Times measured on a shared machine move with its load:
compare the two columns of one row, which ran under the same conditions.
"""

from mwt.experiments import paper
from mwt.experiments.common import Outcome
from mwt.experiments.pairs import Pair
from mwt.experiments.steps import mean_std
from mwt.experiments.tables import OURS, Column, Table, pyplot, save_figure


def paper_form_seconds(per_generation, best_generation) -> float | None:
    """The paper's CNNSplitter time (Table 4): seconds per generation x the best generation."""
    if per_generation is None or best_generation is None:
        return None
    return float(per_generation) * int(best_generation)


def seconds_per_epoch(records: list[dict]) -> float | None:
    """The mean epoch time of a run's history (``metrics.jsonl`` records)."""
    return mean_std([r.get("seconds") for r in records])[0]


def run(ws, models) -> Outcome:
    p = ws.preset
    models = models or list(p.models_for("rq2"))
    rows = []
    for model in models:
        for dataset in p.datasets:
            seeds = []
            for seed in p.seeds:
                record = Pair(ws, model, dataset, seed).record()
                std, mod = record["standard"]["history"], record["modular"]["history"]
                s = {"standard_s_per_epoch": seconds_per_epoch(std),
                     "modular_s_per_epoch": seconds_per_epoch(mod),
                     "modularizing_s": record["modules"]["seconds"] or 0.0,
                     "epochs": len(mod)}
                s["mwt_total_min"] = (s["modular_s_per_epoch"] * s["epochs"]
                                      + s["modularizing_s"]) / 60
                s["ratio"] = s["modular_s_per_epoch"] / s["standard_s_per_epoch"]
                report = record["cnnsplitter"]
                if report is not None:
                    gens = max(int(report["generations_run"]), 1)
                    s["cnnsplitter_s_per_generation"] = report["seconds"]["generations"] / gens
                    s["cnnsplitter_generations"] = report["generations_run"]
                    s["cnnsplitter_best_generation"] = report["best_generation"]
                    s["cnnsplitter_s"] = report["search_seconds"]
                    s["cnnsplitter_paper_form_s"] = paper_form_seconds(
                        s["cnnsplitter_s_per_generation"], report["best_generation"])
                    s["after_training_total_min"] = (s["standard_s_per_epoch"] * len(std)
                                                     + report["search_seconds"]) / 60
                seeds.append(s)
            row = {"source": OURS, "model": model, "dataset": dataset, "seeds": len(seeds)}
            for key in ("modular_s_per_epoch", "epochs", "modularizing_s", "mwt_total_min",
                        "standard_s_per_epoch", "cnnsplitter_s_per_generation",
                        "cnnsplitter_generations", "cnnsplitter_best_generation",
                        "cnnsplitter_s", "cnnsplitter_paper_form_s", "after_training_total_min",
                        "ratio"):
                row[key], row[f"{key}_std"] = mean_std([s.get(key) for s in seeds])
            rows.append(row)
            for pm, pd in paper.pairs_for(paper.TABLE4, model, dataset):
                ref = paper.TABLE4[(pm, pd)]
                # The paper's "generations" are the best generation: its time is the paper form.
                rows.append({"source": paper.SOURCE, "model": pm, "dataset": pd, **ref,
                             "cnnsplitter_best_generation": ref["cnnsplitter_generations"],
                             "cnnsplitter_generations": None,
                             "cnnsplitter_paper_form_s": paper_form_seconds(
                                 ref["cnnsplitter_s_per_generation"],
                                 ref["cnnsplitter_generations"]),
                             "ratio": ref["modular_s_per_epoch"] / ref["standard_s_per_epoch"]})
    table = Table("table4", "Table 4: time of MwT vs modularizing after training", [
        Column("source", "source"), Column("model", "model"), Column("dataset", "dataset"),
        Column("modular_s_per_epoch", "modular training s/epoch", 1),
        Column("epochs", "epochs", 0), Column("modularizing_s", "modularizing s", 1),
        Column("mwt_total_min", "MwT total min", 1),
        Column("standard_s_per_epoch", "standard training s/epoch", 1),
        Column("cnnsplitter_s_per_generation", "CNNSplitter s/generation", 1),
        Column("cnnsplitter_generations", "CNNSplitter generations run", 0),
        Column("cnnsplitter_best_generation", "CNNSplitter best generation", 0),
        Column("cnnsplitter_s", "CNNSplitter search s (ours: all of it)", 0),
        Column("cnnsplitter_paper_form_s", "CNNSplitter s, paper form (s/gen x best gen)", 0),
        Column("after_training_total_min", "after-training total min", 1),
        Column("ratio", "modular/standard s per epoch", 2), Column("seeds", "seeds")], rows,
        notes=["Seconds per epoch include the test-set evaluation; CNNSplitter's search time "
               "(ours) includes importance, sensitivity and every generation run. The paper "
               "form is seconds per generation x the best generation, as the paper computes "
               "its Table 4; the paper's rows give only that form. A search capped by a "
               "budget, a smaller population or a sample of the search split (the cpu "
               "preset's) is not the published setting."])
    return Outcome(tables=[table], figures=[_figure(ws, rows)],
                   notes=["Times depend on the machine and its load; the paper's are on an "
                          "A100 GPU."])


def _figure(ws, rows):
    plt = pyplot()
    ours = [r for r in rows if r["source"] == OURS]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(ours) + 2), 4))
    labels = [f"{r['model']}\n{r['dataset']}" for r in ours]
    xs = range(len(ours))
    train_mwt = [(r["modular_s_per_epoch"] or 0) * (r["epochs"] or 0) / 60 for r in ours]
    mod_mwt = [(r["modularizing_s"] or 0) / 60 for r in ours]
    train_std = [(r["standard_s_per_epoch"] or 0) * (r["epochs"] or 0) / 60 for r in ours]
    search = [(r["cnnsplitter_s"] or 0) / 60 for r in ours]
    w = 0.38
    ax.bar([x - w / 2 for x in xs], train_mwt, w, color="C0", label="modular training")
    ax.bar([x - w / 2 for x in xs], mod_mwt, w, bottom=train_mwt, color="C2",
           label="modularizing")
    ax.bar([x + w / 2 for x in xs], train_std, w, color="C1", label="standard training")
    ax.bar([x + w / 2 for x in xs], search, w, bottom=train_std, color="C3",
           label="CNNSplitter search")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels)
    ax.set_ylabel("minutes")
    ax.legend(fontsize=8)
    ax.set_title("Time: MwT (left bars) vs modularizing after training (right bars), ours")
    path = save_figure(fig, ws.out / "rq2-time.png")
    return ("RQ2: minutes of MwT (modular training + modularizing) and of modularizing after "
            "training (standard training + CNNSplitter's search), ours", path)
