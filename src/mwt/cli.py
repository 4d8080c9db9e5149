"""The ``mwt`` command line: train -> modularize -> reuse, plus listings and the demo."""

import argparse
import sys
import warnings
from pathlib import Path

from mwt.cli_evaluation import add_baseline, add_experiment
from mwt.config import DEMO, METHOD_NAMES, RunSpec, TrainConfig
from mwt.errors import MwtError, MwtWarning

# Each command imports what it needs when it runs, so that `mwt --help` answers at once.


def _method_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> (key, value), the value read as an int, a float, true/false or text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    for kind in (int, float):
        try:
            return key.strip(), kind(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false"):
        return key.strip(), value.lower() == "true"
    return key.strip(), value


def _options_dict(pairs) -> dict:
    options = {}
    for key, value in pairs:
        if key in options:
            raise MwtError(f"--method-option {key} is given twice")
        options[key] = value
    return options


def _add_train(sub) -> None:
    run, cfg = RunSpec(), TrainConfig()  # the defaults shown here are theirs, written once
    p = sub.add_parser("train", help="train a modular (default) or standard model",
                       description="Train a CNN modular with a method (MwT's cohesion and "
                       "coupling losses by default, NeMo or MODA with --method; or, with "
                       "--standard, plain cross-entropy) and save a resumable run.")
    p.add_argument("--model", help=f"registered model (see `mwt models`; default {run.model})")
    p.add_argument("--dataset",
                   help=f"registered dataset (see `mwt datasets`; default {run.dataset})")
    p.add_argument("--data-dir",
                   help="where the dataset's files are (default: $MWT_DATA, system locations)")
    p.add_argument("--download", action="store_true", default=None,
                   help="download the dataset if missing")
    p.add_argument("--width", type=float, help=f"channel width multiplier (default {run.width})")
    p.add_argument("--standard", action="store_true", default=None,
                   help="train without gates (no MwT losses)")
    p.add_argument("--epochs", type=int, help=f"epochs (default {cfg.epochs})")
    p.add_argument("--method", choices=list(METHOD_NAMES),
                   help="modular training method: mwt (default; gates, cohesion + coupling), "
                   "nemo (gates, contrastive loss) or moda (no gates; activations); see "
                   "docs/methods.md")
    p.add_argument("--method-option", dest="method_options", action="append", default=None,
                   metavar="KEY=VALUE", type=_method_option,
                   help="a hyper-parameter of the method besides alpha/beta (nemo: temperature, "
                   "excluded_pairs; moda: gamma, min_fraction); repeat for several")
    p.add_argument("--alpha", type=float,
                   help="first loss weight: mwt cohesion (default: the paper's Table 1, else "
                   "0.5), nemo contrastive (1.4), moda affinity (1.0)")
    p.add_argument("--beta", type=float,
                   help="second loss weight: mwt coupling (default: the paper's Table 1, else "
                   "1.5), moda dispersion (1.0); nemo has none")
    p.add_argument("--reduction", choices=["classes", "pairs"],
                   help="loss averaging: the paper's per-class form (default) or the reference "
                   "code's pairs")
    p.add_argument("--lr", type=float, help=f"learning rate (default {cfg.lr})")
    p.add_argument("--weight-decay", type=float, help=f"default {cfg.weight_decay}")
    p.add_argument("--batch-size", type=int, help=f"default {cfg.batch_size}")
    p.add_argument("--no-flip", dest="hflip", action="store_false", default=None,
                   help="disable horizontal flips")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="no augmentation at all (default: the dataset's own crop/flip)")
    p.add_argument("--crop-padding", type=int, metavar="N",
                   help="random crops after N pixels of zero padding; 0: no crop (default: "
                   "the dataset's own, 4 for CIFAR-10 and Fashion-MNIST, 0 for SVHN)")
    p.add_argument("--seed", type=int, help=f"default {cfg.seed}")
    p.add_argument("--device", default=None,
                   help="cuda, cuda:1, cpu ... (default: cuda if present)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out with its saved settings (a run "
                   "that died before its first checkpoint starts again from epoch 0); only "
                   "--epochs may change")
    p.add_argument("--compile", action="store_true",
                   help="run the training step (model, gates, losses) through torch.compile")
    p.add_argument("--local-losses", action="store_true", default=None,
                   help="under torchrun: cohesion/coupling losses per rank instead of over the "
                   "global batch")
    p.add_argument("--sync-bn", action="store_true", default=None,
                   help="under torchrun on CUDA: BatchNorm statistics over the global batch")
    p.add_argument("--track-modularity", type=int, nargs="?", const=1000, default=None,
                   metavar="N", help="after each epoch, record Jaccard cohesion, coupling, KRR "
                   "and kernel rate of a fixed sample of N training images (default N 1000) "
                   "in metrics.jsonl (track_* keys; paper Figure 5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true", help="no per-epoch summary lines")
    p.set_defaults(func=cmd_train)


# The `mwt train` options that describe the run (RunSpec and TrainConfig fields, CLI switches).
RUN_OPTIONS = ("model", "dataset", "data_dir", "download", "width", "standard", "epochs",
               "method", "method_options", "alpha", "beta", "reduction", "lr", "weight_decay",
               "batch_size", "hflip", "augment", "crop_padding", "seed", "local_losses", "sync_bn",
               "track_modularity")


def cmd_train(args) -> int:
    from mwt.distributed import init_from_env, is_main
    from mwt.runs import train_run
    from mwt.train import rate_label

    given = {k: getattr(args, k) for k in RUN_OPTIONS if getattr(args, k) is not None}
    if "method_options" in given:
        given["method_options"] = _options_dict(given["method_options"])
    if args.resume:
        changed = sorted(set(given) - {"epochs"})
        if changed:
            raise MwtError(f"--resume continues a run with its saved settings; only --epochs "
                           f"may be given, not --{changed[0].replace('_', '-')}")
        spec = None
    else:
        spec = RunSpec.from_settings(**given)
    result = train_run(args.out, spec, resume=args.resume, device=init_from_env(args.device),
                       progress=not args.no_progress, verbose=not args.quiet,
                       compile=args.compile, **({"epochs": args.epochs} if args.resume else {}))
    if not is_main():
        return 0
    final = result.final
    spec = RunSpec.load(args.out)
    kind = "standard" if spec.standard else "modular"
    line = f"{kind} {spec.model} on {spec.dataset}"
    line += "" if spec.standard else f" ({spec.train.method})"
    line += f": test acc {final.get('test_acc', 0):.4f}"
    if "test_kernel_rate" in final:
        line += f", {rate_label(result.model)} {final['test_kernel_rate']:.4f}"
    print(f"{line}; run saved in {args.out}")
    for note in result.warnings:
        print(f"warning: {note}")
    return 0


def cmd_modularize(args) -> int:
    from mwt.distributed import init_from_env, is_main
    from mwt.runs import modularize_run

    mods = modularize_run(args.run, args.tau, data_dir=args.data_dir,
                          device=init_from_env(args.device), batch_size=args.batch_size)
    if not is_main():
        return 0
    print(f"{mods.method} modules of {args.run} at tau {mods.tau}: KRR {mods.krr:.4f}, "
          f"cohesion {mods.cohesion:.4f}, coupling {mods.coupling:.4f}")
    units = mods.model.get("units", "kernels")
    print(f"{'class':<4} {'name':<16} {units:>8} {'share':>7}")
    for i, name in enumerate(mods.classes):
        kept = int(mods.masks[i].sum())
        print(f"{i:<4} {name[:16]:<16} {kept:>8} {kept / mods.total_kernels:>7.2%}")
    seconds = mods.seconds
    for note in getattr(mods, "warnings", []):
        print(f"warning: {note}")
    print(f"took {seconds['total']:.1f}s (pass over the training set {seconds['pass']:.1f}s); "
          f"saved {Path(args.run) / mods.stem}.safetensors and .json")
    return 0


def cmd_reuse(args) -> int:
    from mwt.runs import reuse_run

    sub = reuse_run(args.run, args.classes, args.out, tau=args.tau, epochs=args.epochs,
                    data_dir=args.data_dir, device=args.device, keep_gates=args.keep_gates,
                    fold_gates=args.fold_gates, lr=args.lr, seed=args.seed,
                    verbose=not args.quiet, compare=args.compare,
                    round_kernels=args.round_kernels, cosine_span=args.cosine_span,
                    recalibrate_bn=args.recalibrate_bn)
    r = sub.report
    found = f"at tau {r['tau']:.2f}" if r["tau"] is not None else "found by CNNSplitter"
    print(f"module for classes {r['classes']} ({', '.join(r['class_names'])}), "
          f"from the module set {found}:")
    units = r.get("units", "kernels")
    print(f"  {units + ' kept':<14} {r['kernel_share']:.2%} of the model's gated {units}")
    print(f"  MACs           {r['macs'] / 1e6:.2f} M of {r['macs_full'] / 1e6:.2f} M "
          f"({r['macs_ratio']:.2%})")
    if r.get("unit_block_macs_ratio") is not None:
        print(f"  {'':14} {r['unit_block_macs_ratio']:.2%} of the attention and MLP MACs")
    print(f"  parameters     {r['params']:,} of {r['params_full']:,} ({r['params_ratio']:.2%})")
    line = f"  test accuracy  {r['acc_before_finetune']['test']:.4f} before fine-tuning"
    if r["composition"] == "rows":
        line = (f"  test accuracy  {r['acc_before_finetune']['test']:.4f} (the target classes' "
                "rows, no fine-tuning)")
    elif r["acc_after_finetune"]["test"] is not None:
        line += f", {r['acc_after_finetune']['test']:.4f} after {r['epochs']} epochs"
    print(line)
    if args.compare:
        print(f"  model {args.compare} on the same sub-task: {r['compare_acc']:.4f}")
    for note in r.get("warnings", []):
        print(f"warning: {note}")
    if args.out:
        print(f"saved {args.out}/module.safetensors and module.json")
    return 0


def cmd_export(args) -> int:
    from mwt.module_io import export_module, export_path, load_module

    out = export_path(args.module, args.format, args.out, force=args.force)
    module = load_module(args.module)
    export_module(module, out, args.format)
    print(f"exported {args.module} as {args.format} to {out}")
    return 0


def cmd_demo(args) -> int:
    from mwt.demo import run_demo

    given = {k: getattr(args, k) for k in ("model", "width", "epochs", "batch_size", "classes",
                                           "finetune_epochs") if getattr(args, k) is not None}
    run_demo(args.out, device=args.device, progress=not args.no_progress, quick=args.quick,
             **given)
    return 0


def cmd_models(args) -> int:
    import torch

    from mwt.gates import count_gated_kernels
    from mwt.models import create_model, list_models

    with torch.device("meta"):  # check the width before printing anything
        create_model(list_models()[0], num_classes=10, in_channels=3, width=args.width)
    print(f"{'model':<10} {'gated units':>14} {'parameters':>12}")
    for name in list_models():
        model = create_model(name, num_classes=10, in_channels=3, width=args.width)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:<10} {count_gated_kernels(model):>14} {params:>12,}")
    return 0


def cmd_datasets(args) -> int:
    from mwt.data import list_datasets

    for name in list_datasets():
        print(name)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line like every other error."""

    def error(self, message):
        self.exit(2, f"mwt: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mwt", description="Modularizing while Training: "
                                     "train modular CNNs, cut them into per-class modules, reuse.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("--width", type=float, default=1.0)
    p.set_defaults(func=cmd_models)
    sub.add_parser("datasets", help="list the registered datasets").set_defaults(func=cmd_datasets)

    p = sub.add_parser("modularize", help="compute per-class modules of a trained run",
                       description="Run the trained modular model over its training set and "
                       "keep, per class, the kernels that at least a share tau of the class's "
                       "samples use (paper section 3.3).")
    p.add_argument("run", help="run directory made by `mwt train`")
    p.add_argument("--tau", type=float, default=0.9,
                   help="relevance frequency threshold in (0, 1]; sets of different tau are "
                   "kept side by side as modules-tau<tau>.*")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_modularize)

    p = sub.add_parser("reuse", help="build and fine-tune the module of a few classes",
                       description="Cut the mixed module of the given classes out of a "
                       "modularized run, add a new head and fine-tune it (paper section 3.4).")
    p.add_argument("run", help="run directory with modules (see `mwt modularize`)")
    p.add_argument("--classes", nargs="+", required=True, help="class ids or class names")
    p.add_argument("--tau", type=float, default=None,
                   help="which module set to use when the run has several (see `mwt modularize`)")
    p.add_argument("--out", default=None, help="directory to save the module in")
    p.add_argument("--epochs", type=int, default=None,
                   help="fine-tuning epochs (default 5; a MODA run's modules take none: they "
                   "keep the target classes' rows of the last layer instead of a new head)")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate")
    gates = p.add_mutually_exclusive_group()
    gates.add_argument("--keep-gates", action="store_true",
                       help="keep the gates, restricted to the module's kernels")
    gates.add_argument("--fold-gates", action="store_true",
                       help="fold mean gate values into BatchNorm instead of dropping them; "
                       "give --recalibrate-bn with it: on deep VGGs a folded module of 4 or "
                       "more classes otherwise scores chance before fine-tuning")
    p.add_argument("--recalibrate-bn", action="store_true",
                   help="recompute BatchNorm statistics on the classes' training images "
                   "before anything is measured (removed or folded gates leave statistics "
                   "that no longer fit the module)")
    p.add_argument("--cosine-span", type=float, default=1.0, metavar="S",
                   help="the cosine schedule's T_max is S x the epochs: 1 anneals the rate to "
                   "zero, the reference code's 2 only halves it")
    p.add_argument("--compare", default=None,
                   help="another run (e.g. a standard model) to score on the same sub-task")
    p.add_argument("--round-kernels", type=int, default=None, metavar="N",
                   help="round each layer's kernel count up to a multiple of N (e.g. 8), "
                   "adding the kernels the classes use most")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_reuse)

    p = sub.add_parser("demo", help="the whole pipeline on the embedded data, in minutes",
                       description="Train a standard and a modular model on the embedded "
                       "Fashion-MNIST subset, modularize, reuse a 2-class module, print a table.")
    p.add_argument("--quick", action="store_true",
                   help=f"the modular model only, {DEMO.quick_epochs} epochs: about two minutes "
                   "on a 2-core CPU")
    p.add_argument("--out", default=None, help=f"where the demo's runs go ({DEMO.out}; "
                   f"{DEMO.quick_out} with --quick)")
    p.add_argument("--model", help=f"default {DEMO.model}")
    p.add_argument("--width", type=float, help=f"default {DEMO.width}")
    p.add_argument("--epochs", type=int,
                   help=f"default {DEMO.epochs} ({DEMO.quick_epochs} with --quick)")
    p.add_argument("--batch-size", type=int, help=f"default {DEMO.batch_size}")
    p.add_argument("--classes", nargs=2, help="two class ids or names (default "
                   f"{' '.join(map(str, DEMO.classes))})")
    p.add_argument("--finetune-epochs", type=int, help=f"default {DEMO.finetune_epochs} "
                   f"({DEMO.quick_finetune_epochs} with --quick)")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export", help="export a saved module (torch.export, ONNX, TorchScript)")
    what = p.add_subparsers(dest="what", required=True)
    q = what.add_parser("module", help="export a module saved by `mwt reuse`")
    q.add_argument("module", help="module directory (module.json + module.safetensors)")
    q.add_argument("--format", choices=["pt2", "onnx", "torchscript"], default="pt2",
                   help="pt2: torch.export (default); onnx: the dynamo ONNX exporter; "
                   "torchscript: deprecated by torch, kept while it works")
    q.add_argument("--out", default=None, help="output file (default: inside the module dir)")
    q.add_argument("--force", action="store_true", help="replace an existing output file")
    q.set_defaults(func=cmd_export)
    add_baseline(sub)
    add_experiment(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else 2
    code = None
    try:
        with warnings.catch_warnings():
            # Each command prints its results' warnings itself, as `warning:` lines.
            warnings.simplefilter("ignore", MwtWarning)
            code = args.func(args)
            return code
    except MwtError as exc:
        print(f"mwt: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file operation we did not wrap: still one line, no traceback
        where = f" {exc.filename}" if exc.filename else ""
        print(f"mwt: error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = (f"; continue it with `mwt train --resume --out {args.out}`"
                if args.command == "train" else "; nothing half-written was left behind")
        print(f"mwt: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        if "mwt.distributed" in sys.modules:  # a torchrun rank: leave the process group cleanly
            sys.modules["mwt.distributed"].shutdown(wait=code == 0)


if __name__ == "__main__":
    sys.exit(main())
