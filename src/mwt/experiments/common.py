"""Running one RQ: its options checked before any work, its directory locked, its files written.

Each RQ's runner (``rq1.run`` ...) gets a :class:`~mwt.experiments.steps.Workspace` and the models
to use, and returns an :class:`Outcome` (tables, figures, notes); :func:`run_experiment` writes
them into ``--out`` with the RQ's own Markdown page (``rq1.md``) and ``experiment.json`` (the
command, the settings, versions and machine), which ``mwt report`` reads.
"""

import contextlib
import datetime
import os
import platform
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mwt.checks import is_int
from mwt.errors import MwtError
from mwt.experiments.presets import RQS, Preset, get_preset
from mwt.experiments.steps import Workspace
from mwt.experiments.tables import Table
from mwt.io import (
    LOCK_FILE,
    TEMP_PREFIX,
    atomic_write_bytes,
    check_creatable,
    remove_stale_temps,
    write_json,
)

FORMAT = "mwt-experiment/1"
RECORD = "experiment.json"
# Written into --out when an experiment starts, so that a killed one's folder (runs, results,
# figures, but no experiment.json yet) is known as ours when it is continued.
MARKER = ".mwt-experiment.json"
TITLES = {
    "rq1": "RQ1: effectiveness of training and modularizing (Table 2, Figure 5, Table 3)",
    "rq2": "RQ2: efficiency of training and modularizing (Table 4)",
    "rq3": "RQ3: reusing modules (Tables 5, 6, 7, 8)",
    "rq4": "RQ4: the hyper-parameters alpha, beta and tau (Figure 6, the tau sweep)",
    "methods": "Methods: MwT, NeMo and MODA on the same models, data and modules",
}


@dataclass
class Outcome:
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)  # (caption, PNG path)
    notes: list[str] = field(default_factory=list)


def foreign_entries(out) -> list[str]:
    """What ``out`` holds that no ``mwt experiment`` wrote: everything, unless it carries an
    experiment's marker or record (lock and temporary files aside)."""
    out = Path(out)
    if not out.is_dir() or (out / MARKER).is_file() or (out / RECORD).is_file():
        return []
    return sorted(p.name for p in out.iterdir()
                  if p.name != LOCK_FILE and not p.name.startswith(TEMP_PREFIX))


def check_options(rq: str, preset: str, out, models, epochs, seeds, device, runs=None,
                  force: bool = False):
    """Every option, checked before any work; returns (preset, models, device). An ``out``
    holding files no experiment wrote is refused unless ``force``: its tables, figures and
    pages would replace files of the same names."""
    from mwt.devices import resolve_device
    from mwt.models import list_models

    if rq not in RQS:
        raise MwtError(f"unknown experiment {rq!r}; choose one of {', '.join(RQS)}")
    chosen = preset if isinstance(preset, Preset) else get_preset(preset)
    for what, path in (("--out", out), ("--runs", runs)):
        if path is None and what == "--runs":
            continue
        if path is None or str(path).strip() == "":
            raise MwtError(f"{what} must not be empty")
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise MwtError(f"{what} {path} is a file, not a directory")
        check_creatable(path)
    foreign = [] if force else foreign_entries(out)
    if foreign:
        raise MwtError(f"--out {out} holds files no `mwt experiment` wrote (e.g. {foreign[0]}); "
                       "choose a new or empty folder, or pass --force to write beside them")
    if models is not None:
        models = list(models)
        if not models:
            raise MwtError("--models needs at least one model")
        known = list_models()
        for m in models:
            if m not in known:
                raise MwtError(f"unknown model {m!r}; known models: {', '.join(known)}")
        if len(set(models)) != len(models):
            raise MwtError(f"--models repeats a model: {' '.join(models)}")
    if epochs is not None and (not is_int(epochs) or not 1 <= epochs <= 100_000):
        raise MwtError(f"--epochs must be an integer from 1 to 100000, got {epochs!r}")
    if seeds is not None:
        seeds = list(seeds)
        if not seeds or not all(is_int(s) and 0 <= s < 2**63 for s in seeds):
            raise MwtError(f"--seeds must be one or more integers >= 0, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise MwtError(f"--seeds repeats a seed: {' '.join(map(str, seeds))}")
    chosen = chosen.with_options(epochs=epochs, seeds=seeds)
    resolve_device(device)
    return chosen, models


def _check_data(preset, data_dir) -> None:
    """Load every dataset the experiment needs once, so a missing one fails before training."""
    from mwt.data import load_dataset

    for name in preset.datasets:
        for split in ("train", "test"):
            load_dataset(name, split, data_dir)


def run_experiment(rq: str, preset: "str | Preset" = "micro", out="reports/rq1", *, models=None,
                   epochs: int | None = None, seeds=None, device=None, data_dir=None,
                   runs=None, progress: bool = True, command: str | None = None,
                   stream=None, force: bool = False) -> Outcome:
    """Run one RQ of the paper's section 4 into ``out`` (see ``mwt experiment --help``).

    ``preset``: a name (micro, cpu, paper) or a ``Preset``. Finished runs, module sets,
    searches and reuse results found in ``out`` (or ``runs``, default ``out/runs``) are used as
    they are; a killed experiment continues where it stopped. ``force``: write into an ``out``
    that holds files no experiment wrote.
    """
    chosen, models = check_options(rq, preset, out, models, epochs, seeds, device, runs, force)
    _check_data(chosen, data_dir)
    from mwt.experiments import methods, rq1, rq2, rq3, rq4

    runner = {"rq1": rq1.run, "rq2": rq2.run, "rq3": rq3.run, "rq4": rq4.run,
              "methods": methods.run}[rq]
    out = Path(out)
    ws = Workspace(out=out, runs=Path(runs) if runs is not None else out / "runs",
                   preset=chosen, device=device, data_dir=data_dir, progress=progress,
                   stream=stream)
    started = _now()
    with ws.lock(f"mwt experiment {rq}"):
        remove_stale_temps(out)
        if not (out / MARKER).is_file():
            write_json(out / MARKER, {"format": FORMAT, "written_by": "mwt experiment"})
        ws.log(f"{rq} with preset {chosen.name} into {out} (runs in {ws.runs})")
        outcome = runner(ws, models)
        files = []
        for table in outcome.tables:
            files += table.write(out)
        record = {
            "format": FORMAT, "rq": rq, "title": TITLES[rq], "preset": chosen.name,
            "preset_description": chosen.description, "settings": chosen.settings(),
            "models": models, "command": command or _command(rq, chosen.name, out, models,
                                                              epochs, seeds, device, data_dir,
                                                              runs),
            "runs": str(ws.runs), "trained": ws.trained, "reused": ws.reused,
            "recorded": ws.recorded,
            "tables": [{"name": t.name, "title": t.title, "embed": t.embed}
                       for t in outcome.tables],
            "figures": [{"caption": c, "file": Path(p).name} for c, p in outcome.figures],
            "notes": outcome.notes, "started": started, "finished": _now(),
            "environment": environment(),
        }
        page = rq_page(record, out)
        atomic_write_bytes(out / f"{rq}.md", page.encode())
        write_json(out / RECORD, record)
        ws.log(f"{rq} done: {len(outcome.tables)} tables, {len(outcome.figures)} figures, "
               f"{len(ws.trained)} runs trained, {len(ws.reused)} reused, {len(ws.recorded)} pairs "
               f"read from their records; see {out / f'{rq}.md'}")
    return outcome


def rq_page(record: dict, out: Path, level: int = 1, prefix: str = "") -> str:
    """The Markdown page of one RQ: how it was made, then its tables and figures (files in
    ``out``; figure links are relative to the page, with ``prefix`` in front)."""
    h = "#" * level
    lines = [f"{h} {record['title']}", "",
             f"Preset **{record['preset']}**: {record['preset_description']}.", "",
             "    " + record["command"], ""]
    env = record.get("environment", {})
    if env:
        lines += [f"torch {env.get('torch')}, torch-mwt {env.get('torch_mwt')}"
                  f"{', commit ' + env['git_commit'] if env.get('git_commit') else ''}; "
                  f"{env.get('machine')}; {record.get('started')} to {record.get('finished')}.",
                  ""]
    trained, reused = record.get("trained", []), record.get("reused", [])
    recorded = record.get("recorded", [])
    lines += [f"Runs in `{record.get('runs')}`: {len(trained)} trained or resumed by this "
              f"invocation, {len(reused)} found finished"
              + (f"; {len(recorded)} seed pairs read from their records (`pairs/`, each with "
                 "the time, commit and machine that made it), made by an earlier invocation"
                 if recorded else "") + ".", ""]
    for table in record.get("tables", []):
        path = out / f"{table['name']}.md"
        if not table.get("embed", True):
            lines += [f"{h}# {table['title']}", "", f"[{table['name']}.md]({prefix}"
                      f"{table['name']}.md), CSV: [{table['name']}.csv]({prefix}"
                      f"{table['name']}.csv)", ""]
        elif path.is_file():
            text = path.read_text()
            # Shift the table's own heading below this page's.
            if text.startswith("### "):
                text = "#" * (level + 1) + text[3:]
            lines += [text.rstrip(), "", f"CSV: [{table['name']}.csv]({prefix}{table['name']}"
                      ".csv)", ""]
    for figure in record.get("figures", []):
        lines += [f"![{Path(figure['file']).stem}]({prefix}{figure['file']})", "",
                  f"*{figure['caption']}*", ""]
    if record.get("notes"):
        lines += [f"{h}# Notes", ""] + [f"- {n}" for n in record["notes"]] + [""]
    return "\n".join(lines)


def _command(rq, preset, out, models, epochs, seeds, device, data_dir, runs) -> str:
    parts = ["mwt", "experiment", rq, "--preset", preset, "--out", str(out)]
    if models:
        parts += ["--models", *models]
    if epochs is not None:
        parts += ["--epochs", str(epochs)]
    if seeds is not None:
        parts += ["--seeds", *map(str, seeds)]
    if runs is not None:
        parts += ["--runs", str(runs)]
    if device is not None:
        parts += ["--device", str(device)]
    if data_dir is not None:
        parts += ["--data-dir", str(data_dir)]
    return shlex.join(parts)


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def git_commit(start: Path | None = None) -> str | None:
    """The commit checked out in the repository holding this package (read from ``.git``, no
    git command), or None when it is not a checkout."""
    here = Path(start or __file__).resolve()
    for folder in [here, *here.parents]:
        git = folder / ".git"
        if git.is_file():  # a worktree: "gitdir: PATH"
            with contextlib.suppress(OSError, ValueError):
                git = Path(git.read_text().split(":", 1)[1].strip())
        if not git.is_dir():
            continue
        with contextlib.suppress(OSError):
            head = (git / "HEAD").read_text().strip()
            if not head.startswith("ref:"):
                return head[:12]
            ref = head.split(":", 1)[1].strip()
            common = git
            if (git / "commondir").is_file():
                common = (git / (git / "commondir").read_text().strip()).resolve()
            for base in (git, common):
                if (base / ref).is_file():
                    return (base / ref).read_text().strip()[:12]
                packed = base / "packed-refs"
                if packed.is_file():
                    for line in packed.read_text().splitlines():
                        if line.endswith(" " + ref):
                            return line.split()[0][:12]
        return None
    return None


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Versions and machine, for the record."""
    import torch

    import mwt

    gpu = None
    if torch.cuda.is_available():
        gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    cores = os.cpu_count()
    machine = f"{_cpu_name()}, {cores} CPU cores, {torch.get_num_threads()} torch threads"
    if gpu:
        machine += f", GPU {gpu}"
    return {"torch": torch.__version__, "torch_mwt": mwt.__version__,
            "git_commit": git_commit(), "python": sys.version.split()[0],
            "platform": platform.platform(), "machine": machine, "gpu": gpu,
            "cpu_count": cores}
