"""``mwt demo``: the whole paper pipeline on the embedded data, in minutes on a laptop CPU.

Trains a standard and a modular model, modularizes both (the standard model's figures use the
paper's section 4.2 relevance rule), reuses a 2-class module and prints one table: Table 2's
columns for the two models and, for the reused module, its kernel share, MACs and accuracy
before and after fine-tuning next to the standard model's accuracy on the same sub-task.
``quick=True`` (``mwt demo --quick``) trains the modular model only, for fewer epochs: the same
pipeline and table without the standard model's figures, in about two minutes.
"""

from dataclasses import replace
from pathlib import Path

from mwt.checkpoint import load_run
from mwt.checks import is_int
from mwt.config import DEMO, RunSpec
from mwt.data import load_dataset
from mwt.devices import resolve_device
from mwt.errors import MwtError
from mwt.extract import extract_module
from mwt.io import lock_directory, make_dir
from mwt.modularize import check_tau, class_ids, modularize
from mwt.reuse import reuse, select_classes, subtask_accuracy
from mwt.run_dir import check_run_dir, is_run_dir
from mwt.runs import run_dataset, train_run


def run_demo(out=None, *, model: str = DEMO.model, width: float = DEMO.width,
             epochs: int | None = None, batch_size: int = DEMO.batch_size,
             classes=DEMO.classes, tau: float = DEMO.tau,
             finetune_epochs: int | None = None, device=None, progress: bool = True,
             seed: int = 0, quick: bool = False) -> dict:
    """Run the pipeline into ``out`` (re-running continues or reuses finished runs); the
    defaults are ``mwt.config.DEMO``'s (its ``quick_*`` ones with ``quick``)."""
    if out is None:
        out = DEMO.quick_out if quick else DEMO.out
    if epochs is None:
        epochs = DEMO.quick_epochs if quick else DEMO.epochs
    if finetune_epochs is None:
        finetune_epochs = DEMO.quick_finetune_epochs if quick else DEMO.finetune_epochs
    # Everything is checked before the first model trains.
    if str(out).strip() == "":
        raise MwtError("the demo's output directory (--out) must not be empty")
    out = Path(out)
    spec = RunSpec.from_settings(model=model, dataset="demo", width=width, epochs=epochs,
                                 batch_size=batch_size, seed=seed)
    if not is_int(finetune_epochs) or not 0 <= finetune_epochs <= 1000:
        raise MwtError(f"fine-tuning epochs must be an integer from 0 to 1000, got "
                       f"{finetune_epochs!r}")
    tau = check_tau(tau)
    names = load_dataset("demo", "test").classes
    ids = class_ids(list(classes), names)
    if len(ids) != 2:
        raise MwtError(f"the demo reuses a module of two classes, got {len(ids)}")
    device = resolve_device(device)
    kinds = ("modular",) if quick else ("standard", "modular")
    resumes = {}
    for kind in kinds:
        run_dir = out / kind
        resumes[kind] = is_run_dir(run_dir)  # continue or reuse what an earlier demo made
        check_run_dir(run_dir, resumes[kind])
    make_dir(out)
    with lock_directory(out, "mwt demo"):
        return _run_demo(out, spec, ids, tau, finetune_epochs, device, progress, resumes)


def _run_demo(out: Path, spec: RunSpec, ids, tau, finetune_epochs, device, progress,
              resumes) -> dict:
    results: dict = {}
    for kind in resumes:
        run_dir = out / kind
        resume = resumes[kind]
        print(f"== training the {kind} {spec.model} (width {spec.width}) for "
              f"{spec.train.epochs} epochs")
        trained = train_run(run_dir, replace(spec, standard=kind == "standard"), resume=resume,
                            device=device, progress=progress, verbose=True)
        net, config = load_run(run_dir, device)
        train_data = run_dataset(config, "train")
        test_data = run_dataset(config, "test")
        mods = modularize(net, train_data, tau, device=device, classes=config["classes"])
        results[kind] = {"acc": config["history"][-1]["test_acc"], "krr": mods.krr,
                         "cohesion": mods.cohesion, "coupling": mods.coupling,
                         "model": net, "mods": mods,
                         "warnings": list(trained.warnings) + list(getattr(mods, "warnings", []))}
        if kind == "modular":
            with lock_directory(run_dir, "mwt demo"):
                mods.save(run_dir)

    modular, mods = results["modular"]["model"], results["modular"]["mods"]
    test = select_classes(test_data, ids)
    print(f"== reusing the module of classes {ids} ({', '.join(mods.classes[i] for i in ids)})")
    sub = reuse(modular, mods, ids, train_data, test_data=test_data, epochs=finetune_epochs,
                device=device, seed=spec.train.seed, verbose=True)
    kernels = mods.kernels_for(ids)
    before = {"gates removed": sub.report["acc_before_finetune"]["test"]}
    for label, options in (("gates kept", {"keep_gates": True}),
                           ("gates folded", {"fold_gates": True,
                                             "gate_values": mods.gate_means_for(ids)})):
        variant = extract_module(modular, kernels, **options)
        before[label] = subtask_accuracy(variant, test, ids)
    standard = results.get("standard")
    report = {"modular": _figures(results["modular"]),
              "reuse": {**{k: v for k, v in sub.report.items() if k != "history"},
                        "acc_before_by_variant": before}}
    if standard is not None:
        report["standard"] = _figures(standard)
        report["reuse"]["standard_subtask_acc"] = subtask_accuracy(standard["model"], test, ids)
    print(format_table(report))
    for note in results["modular"]["warnings"]:
        print(f"warning: {note}")
    return report


def _figures(r: dict) -> dict:
    return {k: r[k] for k in ("acc", "krr", "cohesion", "coupling")}


def format_table(report: dict) -> str:
    r = report["reuse"]
    rows = ["| model    | test ACC | KRR     | cohesion | coupling |",
            "|----------|----------|---------|----------|----------|"]
    for kind in ("standard", "modular"):
        if kind in report:
            f = report[kind]
            rows.append(f"| {kind:<8} | {f['acc']:8.2%} | {f['krr']:7.2%} | "
                        f"{f['cohesion']:8.4f} | {f['coupling']:8.4f} |")
    rows += [
        "",
        f"reused module, classes {r['classes']} ({', '.join(r['class_names'])}):",
        f"  kernels kept          {r['kernel_share']:.2%}",
        f"  MACs                  {r['macs'] / 1e6:.2f} M of {r['macs_full'] / 1e6:.2f} M "
        f"({r['macs_ratio']:.2%})",
    ]
    for label, acc in r["acc_before_by_variant"].items():
        rows.append(f"  ACC before fine-tune  {acc:.2%} ({label})")
    after = r["acc_after_finetune"]["test"]
    rows.append(f"  ACC after fine-tune   {after:.2%} ({r['epochs']} epochs, gates removed)"
                if after is not None else "  ACC after fine-tune   - (no fine-tuning asked)")
    if "standard_subtask_acc" in r:
        rows.append(f"  standard model        {r['standard_subtask_acc']:.2%} on the same "
                    "sub-task")
    return "\n".join(rows)
