"""The cpu preset's settings search: candidates scored on a validation split, never the test set.

The training split of the dataset is cut once (a fixed seed, the same images per class) into a
training part and a validation part. Each candidate trains a standard and a modular model on the
training part, scores accuracy on the validation part and modularizes on the training part at
tau 0.9 (KRR, cohesion, coupling: the figures of Table 2). The search is recorded as
``tuning.csv`` / ``tuning.md`` in its output directory, and every finished candidate is read back
instead of retrained, so the command can be stopped and run again.

    python -m mwt.experiments.tune --out docs/results/cpu/tuning --runs /tmp/tune-runs \\
        --model vgg16 --candidates crop-b1.5 flip-b1.5 flip-b2

Candidates are named in ``CANDIDATES``; what each one changes from the library's defaults is
written beside its figures.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

from mwt.config import RunSpec, make_config
from mwt.data import load_dataset
from mwt.errors import MwtError
from mwt.experiments.search_state import STATE, commands_with, read_state
from mwt.gates import make_modular
from mwt.io import atomic_write_bytes, check_writable, read_json, write_csv, write_json
from mwt.models import create_model
from mwt.modularize import modularize
from mwt.train import evaluate, train

# name -> settings (``train`` options; ``epochs`` and the rest come from the command line).
CANDIDATES = {
    "crop-b1.5": {"crop_padding": None, "hflip": None, "alpha": 0.5, "beta": 1.5},
    "flip-b1.5": {"crop_padding": 0, "hflip": True, "alpha": 0.5, "beta": 1.5},
    "crop-b2": {"crop_padding": None, "hflip": None, "alpha": 0.5, "beta": 2.0},
    "flip-b2": {"crop_padding": 0, "hflip": True, "alpha": 0.5, "beta": 2.0},
    "flip-a0.3-b2": {"crop_padding": 0, "hflip": True, "alpha": 0.3, "beta": 2.0},
    "flip-b2.5": {"crop_padding": 0, "hflip": True, "alpha": 0.5, "beta": 2.5},
    "flip-b2-wd": {"crop_padding": 0, "hflip": True, "alpha": 0.5, "beta": 2.0,
                   "weight_decay": 5e-4},
}
STANDARD_KEYS = ("crop_padding", "hflip", "weight_decay")  # what a standard run depends on
RESULT_FORMAT = "mwt-tuning-result/1"
STATE_FORMAT = "mwt-tuning-search/1"
COLUMNS = ["candidate", "model", "epochs", "crop_padding", "hflip", "alpha", "beta",
           "weight_decay", "standard_val_acc", "modular_val_acc", "acc_loss", "krr", "cohesion",
           "coupling", "standard_seconds", "modular_seconds"]


def validation_split(data, per_class: int, seed: int = 0):
    """(training part, validation part) of ``data``: ``per_class`` images of each class, drawn
    with ``seed``, go to the validation part."""
    g = torch.Generator().manual_seed(seed)
    val = []
    for c in range(data.num_classes):
        idx = torch.nonzero(data.labels == c).flatten()
        if len(idx) <= per_class:
            raise MwtError(f"class {c} has {len(idx)} images, too few for {per_class} "
                           "validation images")
        val.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    val = torch.cat(val)
    keep = torch.ones(len(data.labels), dtype=torch.bool)
    keep[val] = False
    return data.subset(keep), data.subset(val.sort().values)


def _run(model_name, data, val, settings, epochs, width, standard, out: Path, device):
    """Train one model on ``data`` into ``out`` (resumed if killed) and return it trained."""
    torch.manual_seed(0)
    net = create_model(model_name, data.num_classes, data.in_channels, width)
    if not standard:
        net = make_modular(net)
    options = {k: v for k, v in settings.items() if not standard or k in STANDARD_KEYS}
    if standard:
        options.update(alpha=None, beta=None)
    t0 = time.perf_counter()
    resume = (out / "config.json").is_file()
    train(net, data, val, epochs=epochs, out=out, resume=resume, device=device, progress=False,
          **options)
    return net, time.perf_counter() - t0


def _beside(run_dir: Path) -> Path:
    """The JSON result kept beside a run directory (``with_suffix`` would cut ``b1.5-e8``)."""
    return run_dir.parent / f"{run_dir.name}.json"


def score_candidate(name: str, model_name: str, data, val, epochs: int, width: float,
                    runs: Path, device=None) -> dict:
    """Train (or read back) the candidate's standard and modular runs and score them."""
    settings = dict(CANDIDATES[name])
    std_key = "-".join(f"{k}{settings.get(k)}" for k in STANDARD_KEYS)
    std_dir = runs / f"{model_name}-standard-{std_key}-e{epochs}"
    mod_dir = runs / f"{model_name}-{name}-e{epochs}"
    result_path = _beside(mod_dir)
    if result_path.is_file():
        saved = read_json(result_path)
        if saved.get("format") == RESULT_FORMAT:
            return saved["result"]
    std_result = _beside(std_dir)
    if std_result.is_file():
        std = read_json(std_result)
    else:
        std_net, seconds = _run(model_name, data, val, settings, epochs, width, True, std_dir,
                                device)
        std = {"val_acc": evaluate(std_net, val, device=device)["acc"], "seconds": seconds}
        write_json(std_result, std)
    mod_net, seconds = _run(model_name, data, val, settings, epochs, width, False, mod_dir,
                            device)
    mod_acc = evaluate(mod_net, val, device=device)["acc"]
    modules = modularize(mod_net, data, tau=0.9, device=device)
    result = {"candidate": name, "model": model_name, "epochs": epochs,
              "crop_padding": settings.get("crop_padding"), "hflip": settings.get("hflip"),
              "alpha": settings["alpha"], "beta": settings["beta"],
              "weight_decay": settings.get("weight_decay", 0.0),
              "standard_val_acc": std["val_acc"], "modular_val_acc": mod_acc,
              "acc_loss": 100 * (std["val_acc"] - mod_acc), "krr": 100 * modules.krr,
              "cohesion": modules.cohesion, "coupling": modules.coupling,
              "standard_seconds": std["seconds"], "modular_seconds": seconds}
    write_json(result_path, {"format": RESULT_FORMAT, "result": result})
    return result


def write_tables(rows: list[dict], out: Path, header: str) -> None:
    """``tuning.csv`` (every figure) and ``tuning.md`` (rounded, with the split described)."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "tuning.csv", COLUMNS, rows)
    lines = [header, "",
             "| candidate | model | epochs | crop | flip | alpha | beta | wd | standard val "
             "acc | modular val acc | loss (pt) | KRR % | cohesion | coupling |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        crop = "dataset's" if r["crop_padding"] is None else r["crop_padding"]
        flip = "dataset's" if r["hflip"] is None else r["hflip"]
        lines.append(f"| {r['candidate']} | {r['model']} | {r['epochs']} | {crop} | {flip} | "
                     f"{r['alpha']} | {r['beta']} | {r['weight_decay']} | "
                     f"{100 * r['standard_val_acc']:.2f} | {100 * r['modular_val_acc']:.2f} | "
                     f"{r['acc_loss']:.2f} | {r['krr']:.2f} | {r['cohesion']:.4f} | "
                     f"{r['coupling']:.4f} |")
    atomic_write_bytes(out / "tuning.md", ("\n".join(lines) + "\n").encode())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mwt.experiments.tune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="where tuning.csv / tuning.md go")
    p.add_argument("--runs", required=True, help="where the candidates' runs go")
    p.add_argument("--model", default="vgg16")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--val-per-class", type=int, default=600)
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    try:  # every setting and both directories checked before any data is read or trained
        for name in args.candidates:
            RunSpec(model=args.model, dataset=args.dataset, width=args.width, standard=False,
                    train=make_config(None, epochs=args.epochs,
                                      **CANDIDATES[name])).validate()
        if args.val_per_class < 1:
            raise MwtError(f"--val-per-class must be at least 1, got {args.val_per_class}")
        check_writable(args.out)
        check_writable(args.runs)
        full = load_dataset(args.dataset, "train")
        data, val = validation_split(full, args.val_per_class)
        runs = Path(args.runs)
        runs.mkdir(parents=True, exist_ok=True)
        rows = []
        for name in args.candidates:
            print(f"candidate {name}", flush=True)
            rows.append(score_candidate(name, args.model, data, val, args.epochs, args.width,
                                        runs, args.device))
            print("  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                   for k, v in rows[-1].items()), flush=True)
        out = Path(args.out)
        state = read_state(out, STATE_FORMAT)
        done = {(r["candidate"], r["model"], r["epochs"]) for r in rows}
        previous = [r for r in state.get("rows", [])
                    if (r["candidate"], r["model"], r["epochs"]) not in done]
        commands = commands_with(state, "mwt.experiments.tune", argv)
        header = (f"# The cpu preset's settings search\n\nValidation split: "
                  f"{args.val_per_class} images per class of {args.dataset}'s training split "
                  f"(seed 0); training on the other {len(data)}. Width {args.width}, batch 128, "
                  "lr 0.05 (cosine), seed 0; KRR, cohesion and coupling at tau 0.9 on the "
                  "training part. The test split is never read.\n\nCommands (each adds its "
                  "candidates' rows; finished candidates are read back, not retrained):\n\n"
                  + "\n".join(f"    {c}" for c in commands))
        order = list(CANDIDATES)
        rows = sorted(previous + rows, key=lambda r: (r["model"], r["epochs"],
                                                      order.index(r["candidate"])))
        write_tables(rows, out, header)
        write_json(out / STATE, {"format": STATE_FORMAT, "commands": commands, "rows": rows})
    except MwtError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
