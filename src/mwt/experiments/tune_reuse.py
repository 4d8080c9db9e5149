"""The cpu preset's fine-tuning search: how RQ3 reuses a module, chosen on a validation split.

It takes a modular run that ``python -m mwt.experiments.tune`` trained on the training part of
its validation split (and optionally that candidate's standard run), cuts the same split again,
modularizes the run on the training part at tau 0.9 and, for a few random M-class sub-tasks,
fine-tunes the mixed module under every protocol of a grid: the gates' start (removed, kept,
folded), BatchNorm recalibrated or not, epochs, learning rate and cosine span. Each is scored on
the held-out validation images of its classes, against the standard run on the same images.
The test split is never read. Every finished sub-task is written at once to ``search.json`` in
``--out`` (a stopped search continues where it was), and ``tuning-reuse.csv`` / ``.md`` hold
the means per protocol and M.

    python -m mwt.experiments.tune_reuse --dataset fashion-mnist --run RUNS/vgg16-flip-b2-e30 \\
        --standard RUNS/vgg16-standard-crop_padding0-hflipTrue-weight_decayNone-e30 \\
        --out docs/results/cpu/tuning/reuse --sizes 2 5 10 --subtasks 2
"""

import argparse
import itertools
import sys
import time
import warnings
from pathlib import Path

from mwt.checkpoint import load_run
from mwt.data import load_dataset
from mwt.errors import MwtError, MwtWarning
from mwt.experiments.rq3 import GATE_STARTS, draw_subtasks
from mwt.experiments.search_state import STATE, commands_with, read_state
from mwt.experiments.steps import mean_std
from mwt.experiments.tune import validation_split
from mwt.io import atomic_write_bytes, check_writable, write_csv, write_json
from mwt.modularize import modularize
from mwt.reuse import MIN_FINETUNE_STEPS, reuse, select_classes, subtask_accuracy
from mwt.runs import run_augmentation

STATE_FORMAT = "mwt-reuse-tuning/1"
COLUMNS = ["protocol", "m", "subtasks", "val_acc", "val_acc_std", "std_val_acc", "loss",
           "loss_std", "before_acc", "epochs_run", "seconds"]


def protocol_name(start: str, recalibrate: bool, epochs: int, lr: float, span: float) -> str:
    return f"{start}{'-bn' if recalibrate else ''}-e{epochs}-lr{lr:g}-span{span:g}"


def grid(starts, recalibrate, epochs, lrs, spans) -> list[dict]:
    """Every protocol of the search, in a fixed order."""
    out = []
    for start, recal, e, lr, span in itertools.product(starts, recalibrate, epochs, lrs, spans):
        out.append({"name": protocol_name(start, recal, e, lr, span), "start": start,
                    "recalibrate_bn": recal, "epochs": e, "lr": lr, "cosine_span": span})
    return out


def score(model, standard, mods, train, val, augment, classes, protocol, device,
          min_steps: int = MIN_FINETUNE_STEPS) -> dict:
    """One sub-task under one protocol: validation accuracy before and after fine-tuning."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MwtWarning)  # a weak module is reported by its numbers
        sub = reuse(model, mods, list(classes), train, test_data=val, epochs=protocol["epochs"],
                    lr=protocol["lr"], cosine_span=protocol["cosine_span"],
                    recalibrate_bn=protocol["recalibrate_bn"], augment=augment, device=device,
                    seed=0, min_steps=min_steps, **GATE_STARTS[protocol["start"]])
    r = sub.report
    std_acc = None
    if standard is not None:
        std_acc = 100 * subtask_accuracy(standard, select_classes(val, list(classes)),
                                         list(classes))
    return {"protocol": protocol["name"], "m": len(classes), "classes": list(classes),
            "val_acc": 100 * r["acc_after_finetune"]["test"],
            "before_acc": 100 * r["acc_before_finetune"]["test"], "std_val_acc": std_acc,
            "epochs_run": r["epochs"], "seconds": time.perf_counter() - t0}


def summarize(rows: list[dict], order: list[str]) -> list[dict]:
    """Mean (and std) over sub-tasks per protocol and M."""
    out = []
    keys = sorted({(r["protocol"], r["m"]) for r in rows},
                  key=lambda k: (k[1], order.index(k[0]) if k[0] in order else len(order)))
    for name, m in keys:
        rs = [r for r in rows if r["protocol"] == name and r["m"] == m]
        row = {"protocol": name, "m": m, "subtasks": len(rs)}
        row["val_acc"], row["val_acc_std"] = mean_std([r["val_acc"] for r in rs])
        stds = [r["std_val_acc"] for r in rs if r["std_val_acc"] is not None]
        row["std_val_acc"] = mean_std(stds)[0] if len(stds) == len(rs) else None
        if row["std_val_acc"] is not None:
            row["loss"], row["loss_std"] = mean_std([r["std_val_acc"] - r["val_acc"] for r in rs])
        else:
            row["loss"] = row["loss_std"] = None
        row["before_acc"] = mean_std([r["before_acc"] for r in rs])[0]
        row["epochs_run"] = max(r["epochs_run"] for r in rs)
        row["seconds"] = sum(r["seconds"] for r in rs)
        out.append(row)
    return out


def write_tables(summary: list[dict], out: Path, header: str) -> None:
    write_csv(out / "tuning-reuse.csv", COLUMNS, summary)

    def f(v, digits=2):
        return "-" if v is None else f"{v:.{digits}f}"

    lines = [header, "", "| M | protocol | sub-tasks | val acc % | standard val acc % | loss "
             "(pt) | before fine-tuning % | epochs run | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in summary:
        lines.append(f"| {r['m']} | {r['protocol']} | {r['subtasks']} | {f(r['val_acc'])} ± "
                     f"{f(r['val_acc_std'])} | {f(r['std_val_acc'])} | {f(r['loss'])} | "
                     f"{f(r['before_acc'], 1)} | {r['epochs_run']} | {r['seconds']:.0f} |")
    atomic_write_bytes(out / "tuning-reuse.md", ("\n".join(lines) + "\n").encode())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mwt.experiments.tune_reuse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a modular run trained by the settings search")
    p.add_argument("--standard", default=None, help="its standard run (for the loss column)")
    p.add_argument("--out", required=True)
    p.add_argument("--dataset", default=None,
                   help="the runs' dataset (the settings search trains fashion-mnist)")
    p.add_argument("--sizes", type=int, nargs="+", default=[2, 5, 10])
    p.add_argument("--subtasks", type=int, default=2, help="random sub-tasks per M")
    p.add_argument("--subtask-seed", type=int, default=1,
                   help="default 1: other sub-tasks than RQ3's (seed 0)")
    p.add_argument("--starts", nargs="+", default=list(GATE_STARTS), choices=list(GATE_STARTS))
    p.add_argument("--recalibrate", choices=["no", "yes", "both"], default="both")
    p.add_argument("--epochs", type=int, nargs="+", default=[2])
    p.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.05])
    p.add_argument("--spans", type=float, nargs="+", default=[1.0])
    p.add_argument("--min-steps", type=int, default=MIN_FINETUNE_STEPS,
                   help=f"the fewest fine-tuning steps (default {MIN_FINETUNE_STEPS}, as RQ3)")
    p.add_argument("--val-per-class", type=int, default=600)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    recal = {"no": [False], "yes": [True], "both": [False, True]}[args.recalibrate]
    protocols = grid(args.starts, recal, args.epochs, args.lrs, args.spans)
    try:
        if args.subtasks < 1:
            raise MwtError(f"--subtasks must be at least 1, got {args.subtasks}")
        out = Path(args.out)
        check_writable(out)
        model, config = load_run(args.run, args.device)
        standard = load_run(args.standard, args.device)[0] if args.standard else None
        dataset = args.dataset or config.get("dataset")
        if not dataset:
            raise MwtError(f"{args.run} does not name its dataset; give --dataset (the settings "
                           "search's runs do not record it)")
        full = load_dataset(dataset, "train")
        train, val = validation_split(full, args.val_per_class)
        augment = run_augmentation(config, train)
        tasks = draw_subtasks(full.num_classes, args.sizes, args.subtasks, args.subtask_seed)
        out.mkdir(parents=True, exist_ok=True)
        state_path = out / STATE
        state = read_state(out, STATE_FORMAT)
        if state and state.get("run") != str(args.run):
            raise MwtError(f"{out} holds the search of {state.get('run')}; choose another --out")
        rows = state.get("rows", [])
        done = {(r["protocol"], tuple(r["classes"])) for r in rows}
        mods = None
        for protocol in protocols:
            for m, classes_list in tasks.items():
                for classes in classes_list:
                    if (protocol["name"], tuple(classes)) in done:
                        continue
                    if mods is None:  # only when something is left to fine-tune
                        print(f"modularizing {args.run} on {len(train)} training images",
                              flush=True)
                        mods = modularize(model, train, tau=0.9, device=args.device)
                    row = score(model, standard, mods, train, val, augment, classes, protocol,
                                args.device, args.min_steps)
                    rows.append(row)
                    write_json(state_path, {"format": STATE_FORMAT, "run": str(args.run),
                                            "rows": rows,
                                            "commands": state.get("commands", [])})
                    print(f"{protocol['name']} M={m} {list(classes)}: val {row['val_acc']:.2f}"
                          f" (standard {row['std_val_acc']}), {row['seconds']:.0f}s",
                          flush=True)
        commands = commands_with(state, "mwt.experiments.tune_reuse", argv)
        write_json(state_path, {"format": STATE_FORMAT, "run": str(args.run), "rows": rows,
                                "commands": commands})
        header = (f"# The cpu preset's fine-tuning search\n\nModule set: `{args.run}` at tau "
                  f"0.9 on the training part of the settings search's split ({len(train)} "
                  f"images); every protocol fine-tunes the mixed module of {args.subtasks} "
                  f"random sub-tasks per M (seed {args.subtask_seed}) on the training part's "
                  "images of its classes and is scored on the held-out validation images of "
                  f"those classes ({args.val_per_class} per class). The test split is never "
                  "read. Protocol: gates start (removed / kept / folded), `-bn` BatchNorm "
                  "recalibrated first, epochs, lr, cosine span (T_max = span x epochs); at "
                  f"least {args.min_steps} steps. Commands (each adds its protocols' rows):\n\n"
                  + "\n".join(f"    {c}" for c in commands))
        write_tables(summarize(rows, [q["name"] for q in protocols]), out, header)
    except MwtError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
