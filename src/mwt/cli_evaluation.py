"""The ``mwt`` commands of the paper's evaluation: ``baseline`` (CNNSplitter), ``experiment``
(the research questions of section 4 and the methods comparison) and ``report``.

``mwt.cli`` adds them to its parser; like every command, each imports what it needs when it
runs, so that ``mwt --help`` answers at once.
"""

import sys
from pathlib import Path


def add_baseline(sub) -> None:
    from mwt.baselines import CNNSplitterConfig

    cfg = CNNSplitterConfig()  # the defaults shown here are its own, written once
    p = sub.add_parser("baseline", help="modularize a standard run with a baseline method")
    what = p.add_subparsers(dest="baseline", required=True)
    q = what.add_parser("cnnsplitter", help="CNNSplitter's genetic search (Qi et al., ASE 2022)",
                        description="Search per-class modules of a trained standard model with "
                        "CNNSplitter (see docs/baselines.md) and save them like MwT's, for "
                        "`mwt reuse`. A killed search continues when run again.")
    q.add_argument("run", help="run directory of `mwt train --standard`")
    q.add_argument("--out", required=True, help="directory for the result (new, empty, or this "
                   "command's own to continue it)")
    q.add_argument("--generations", type=int, help=f"genetic steps (default {cfg.generations})")
    q.add_argument("--population", type=int,
                   help=f"candidates per class (default {cfg.population})")
    q.add_argument("--parents", type=int, help=f"parents per generation (default {cfg.parents})")
    q.add_argument("--keep-parents", type=int,
                   help=f"parents carried over (default {cfg.keep_parents})")
    q.add_argument("--mutation-rate", type=float,
                   help="share of genes re-drawn (default: the published config of the model "
                   "and dataset, 0.05 on CIFAR-10 and 0.10 on SVHN)")
    q.add_argument("--patience", type=int,
                   help=f"stop after this many generations without a better best "
                   f"(default {cfg.patience})")
    q.add_argument("--no-early-stop", action="store_true", help="run every generation")
    q.add_argument("--search-samples", type=int,
                   help="search on a random subset of the 20%% search split (default: all)")
    q.add_argument("--budget-minutes", type=float,
                   help="stop after the generation that passes this search time")
    q.add_argument("--seed", type=int, help=f"default {cfg.seed}")
    q.add_argument("--batch-size", type=int,
                   help=f"samples per forward pass of a cut candidate, or (candidate, sample) "
                   f"pairs with --scoring masked (default {cfg.batch_size})")
    q.add_argument("--scoring", choices=["cut", "masked"],
                   help=f"run each candidate cut to its kernels, or the whole model with the "
                   f"others masked (default {cfg.scoring}; masked can be faster on a GPU)")
    q.add_argument("--workers", type=int, default=None,
                   help="candidates scored side by side, each with its share of the torch "
                   "threads (default: one per torch thread)")
    q.add_argument("--data-dir", default=None)
    q.add_argument("--device", default=None)
    q.add_argument("--force", action="store_true",
                   help="search again from scratch in an --out that holds a search")
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.add_argument("--quiet", action="store_true", help="no per-generation lines")
    q.set_defaults(func=cmd_baseline)


BASELINE_OPTIONS = ("generations", "population", "parents", "keep_parents", "mutation_rate",
                    "patience", "search_samples", "budget_minutes", "seed", "batch_size",
                    "scoring")


def cmd_baseline(args) -> int:
    from dataclasses import replace

    from mwt.baselines.cnnsplitter import (
        cnnsplitter_run,
        default_config,
        derived_from_population,
    )

    given = {k: getattr(args, k) for k in BASELINE_OPTIONS}
    config = default_config(**given)
    derived = derived_from_population(**given)
    if derived:
        used = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in derived.items())
        print(f"population {config.population}: using {used} (the published 50 parents and 20 "
              "kept of 100 candidates)")
    if args.no_early_stop:
        config = replace(config, patience=None)
    try:
        result = cnnsplitter_run(args.run, args.out, config, data_dir=args.data_dir,
                                 device=args.device, progress=not args.no_progress,
                                 verbose=not args.quiet, force=args.force,
                                 workers=args.workers)
    except KeyboardInterrupt:
        print(f"mwt: interrupted; run the same command again to continue {args.out} from its "
              "last finished generation", file=sys.stderr)
        return 130
    r = result.report
    budget = f" of a {r['budget_minutes']:g} min budget" if r["budget_minutes"] else ""
    print(f"published config {r['published_config']}; {r['workers']} worker(s), "
          f"{r['reused_candidates']} candidate scores reused")
    print(f"CNNSplitter on {args.run}: {r['generations_run']} generations, best "
          f"{r['best_generation']}, stopped by {r['stopped_by'].replace('_', ' ')}; search "
          f"{r['search_seconds'] / 60:.1f} min{budget}")
    print(f"  standard model    test acc {r['standard_acc']['test']:.4f}")
    print(f"  composed modules  test acc {r['composed_acc']['test']:.4f} (search split "
          f"{r['composed_acc']['search']:.4f})")
    print(f"  KRR {r['krr']:.4f}, cohesion {r['cohesion']:.4f} (the reference's way, cut "
          f"modules on test images: {r['cohesion_reference']:.4f}), coupling "
          f"{r['coupling']:.4f}, "
          f"module MACs {r['macs_ratio']:.2%} of the model's")
    for note in r["warnings"]:
        print(f"warning: {note}")
    print(f"saved {Path(args.out) / result.modules.stem}.safetensors and .json; results in "
          f"{Path(args.out) / 'cnnsplitter.json'}")
    return 0


def add_experiment(sub) -> None:
    p = sub.add_parser("experiment", help="regenerate a research question of the paper",
                       description="Run one of the paper's research questions (section 4) and "
                       "write its tables (Markdown + CSV) and figures (PNG) into --out, with "
                       "the paper's published figures beside ours. Finished runs, module sets, "
                       "searches and reuse results found there are reused; a killed experiment "
                       "continues when started again (docs/reproducing.md).")
    p.add_argument("rq", choices=["rq1", "rq2", "rq3", "rq4", "methods"],
                   help="rq1: Table 2, Figure 5, Table 3; rq2: Table 4; rq3: Tables 5-8; "
                   "rq4: Figure 6 and the tau sweep; methods: MwT, NeMo and MODA side by side "
                   "(docs/methods.md)")
    p.add_argument("--preset", required=True,
                   help="micro (seconds, for tests), cpu (full Fashion-MNIST, narrow models, "
                   "about 2 h per RQ on 2 cores) or paper (CIFAR-10/SVHN, 200 epochs, GPU)")
    p.add_argument("--out", required=True, help="directory for this RQ's tables, figures and "
                   "(unless --runs) runs")
    p.add_argument("--models", nargs="+", help="the models to use (default: the preset's for "
                   "this RQ)")
    p.add_argument("--epochs", type=int, help="training epochs of every run (default: the "
                   "preset's)")
    p.add_argument("--seeds", nargs="+", type=int, help="one training run per seed; tables "
                   "give mean and std (default: the preset's, 0)")
    p.add_argument("--runs", default=None, help="where the training runs live (default "
                   "OUT/runs); share one between RQs to train each run once")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu ... (default: cuda if "
                   "present)")
    p.add_argument("--data-dir", default=None,
                   help="where the dataset's files are (default: $MWT_DATA, system locations)")
    p.add_argument("--force", action="store_true", help="write into an --out that holds files "
                   "no `mwt experiment` wrote (tables and figures replace files of their names)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("report", help="one Markdown report of every experiment in a folder",
                       description="Gather the tables and figures of every `mwt experiment` "
                       "found under DIR into DIR/report.md, with the commands, versions and "
                       "machine that made them.")
    p.add_argument("dir", help="folder holding the experiments' --out directories")
    p.add_argument("--force", action="store_true",
                   help="replace a DIR/report.md that `mwt report` did not write")
    p.set_defaults(func=cmd_report)


def cmd_experiment(args) -> int:
    from mwt.experiments import run_experiment

    try:
        run_experiment(args.rq, args.preset, args.out, models=args.models, epochs=args.epochs,
                       seeds=args.seeds, device=args.device, data_dir=args.data_dir,
                       runs=args.runs, progress=not args.no_progress, force=args.force)
    except KeyboardInterrupt:
        print(f"mwt: interrupted; run the same command again to continue {args.out} (finished "
              "runs and results are kept)", file=sys.stderr)
        return 130
    return 0


def cmd_report(args) -> int:
    from mwt.experiments import build_report

    path = build_report(args.dir, force=args.force)
    print(f"report written to {path}")
    return 0
