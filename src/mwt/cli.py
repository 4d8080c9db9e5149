"""The ``mwt`` command line: train -> modularize -> reuse, plus listings and the demo."""

import argparse
import sys
from pathlib import Path

from mwt.errors import MwtError


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a modular (default) or standard model",
                       description="Train a CNN with MwT's cohesion and coupling losses "
                       "(or, with --standard, plain cross-entropy) and save a resumable run.")
    p.add_argument("--model", default="vgg16", help="registered model (see `mwt models`)")
    p.add_argument("--dataset", default="demo", help="registered dataset (see `mwt datasets`)")
    p.add_argument("--data-dir", default=None,
                   help="where the dataset's files are (default: $MWT_DATA, system locations)")
    p.add_argument("--download", action="store_true", help="download the dataset if missing")
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 200)")
    p.add_argument("--standard", action="store_true", help="train without gates (no MwT losses)")
    p.add_argument("--alpha", type=float, default=None,
                   help="cohesion loss weight (default: the paper's Table 1, else 0.5)")
    p.add_argument("--beta", type=float, default=None,
                   help="coupling loss weight (default: the paper's Table 1, else 1.5)")
    p.add_argument("--reduction", choices=["classes", "pairs"], default="classes",
                   help="loss averaging: the paper's per-class form or the reference's pairs")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--no-flip", action="store_true", help="disable horizontal flips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None,
                   help="cuda, cuda:1, cpu ... (default: cuda if present)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out with its saved settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true", help="no per-epoch summary lines")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    import torch

    from mwt.data import load_dataset
    from mwt.gates import make_modular
    from mwt.io import read_json
    from mwt.models import create_model
    from mwt.train import default_alpha_beta, train

    out = Path(args.out)
    if args.resume:
        saved = read_json(out / "config.json").get("cli")
        if not saved:
            raise MwtError(f"{out} was not made by `mwt train`; resume it from Python")
        epochs = args.epochs if args.epochs is not None else saved["epochs"]
        keep = {"device": args.device, "no_progress": args.no_progress, "quiet": args.quiet}
        args = argparse.Namespace(**{**saved, **keep, "epochs": epochs, "out": str(out),
                                     "resume": True})
    elif args.epochs is None:
        args.epochs = 200
    train_data = load_dataset(args.dataset, "train", args.data_dir, download=args.download)
    test_data = load_dataset(args.dataset, "test", args.data_dir, download=args.download)
    alpha, beta = default_alpha_beta(args.model, args.dataset)
    alpha = alpha if args.alpha is None else args.alpha
    beta = beta if args.beta is None else args.beta
    torch.manual_seed(args.seed)
    model = create_model(args.model, train_data.num_classes, train_data.in_channels, args.width)
    if not args.standard:
        model = make_modular(model)
    cli = {k: v for k, v in vars(args).items() if k != "func"}
    cli.update(alpha=alpha, beta=beta)
    info = {"dataset": train_data.name, "classes": list(train_data.classes),
            "mean": list(train_data.mean), "std": list(train_data.std), "cli": cli}
    result = train(model, train_data, test_data, epochs=args.epochs, alpha=alpha, beta=beta,
                   out=out, resume=args.resume, device=args.device,
                   progress=not args.no_progress, verbose=not args.quiet, run_info=info, lr=args.lr,
                   weight_decay=args.weight_decay, batch_size=args.batch_size,
                   reduction=args.reduction, seed=args.seed,
                   hflip=train_data.hflip and not args.no_flip)
    final = result.final
    kind = "standard" if args.standard else "modular"
    line = f"{kind} {args.model} on {args.dataset}: test acc {final.get('test_acc', 0):.4f}"
    if "test_kernel_rate" in final:
        line += f", kernel rate {final['test_kernel_rate']:.4f}"
    print(f"{line}; run saved in {out}")
    return 0


def cmd_models(args) -> int:
    from mwt.gates import count_gated_kernels
    from mwt.models import create_model, list_models

    print(f"{'model':<10} {'gated kernels':>14} {'parameters':>12}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mwt", description="Modularizing while Training: "
                                     "train modular CNNs, cut them into per-class modules, reuse.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("--width", type=float, default=1.0)
    p.set_defaults(func=cmd_models)
    sub.add_parser("datasets", help="list the registered datasets").set_defaults(func=cmd_datasets)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MwtError as exc:
        print(f"mwt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mwt: interrupted; a run can be continued with `mwt train --resume --out DIR`",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
