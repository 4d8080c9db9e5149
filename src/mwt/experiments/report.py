"""``mwt report DIR``: one Markdown page with every table and figure of the experiments in DIR.

It finds each RQ's ``experiment.json`` under DIR (e.g. ``DIR/rq1``, ``DIR/rq2``), and writes
``DIR/report.md``: how each was made (command, preset, versions, machine, times), then its tables
(embedded from their ``.md`` files, with links to the CSVs) and figures (linked PNGs), in RQ
order. Nothing is recomputed.
"""

from pathlib import Path

from mwt.errors import MwtError
from mwt.experiments.common import FORMAT, RECORD, _now, environment, rq_page
from mwt.experiments.presets import RQS
from mwt.io import atomic_write_bytes, read_json

REPORT = "report.md"
TUNING = "tuning.md"  # written by mwt.experiments.tune
TITLE = "# torch-mwt: the paper's evaluation (section 4), regenerated"
MARK = "<!-- written by `mwt report`; it replaces this file when run again -->"


def written_by_us(path: Path) -> bool:
    """Whether ``path`` is a report ``mwt report`` wrote (its mark, or its title: reports from
    before the mark)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = [f.readline().rstrip("\n") for _ in range(2)]
    except OSError:
        return False
    return MARK in first or first[0] == TITLE


def find_experiments(directory) -> list[tuple[Path, dict]]:
    """(folder, record) of every experiment under ``directory``, in RQ order."""
    found = []
    for path in sorted(Path(directory).rglob(RECORD)):
        record = read_json(path)
        if record.get("format") == FORMAT:
            found.append((path.parent, record))
    order = {rq: i for i, rq in enumerate(RQS)}
    return sorted(found, key=lambda item: (order.get(item[1].get("rq"), len(order)),
                                           str(item[0])))


def build_report(directory, force: bool = False) -> Path:
    """Write ``directory/report.md`` from the experiments found under it; returns its path. A
    ``report.md`` there that ``mwt report`` did not write is replaced only with ``force``."""
    if directory is None or str(directory).strip() == "":
        raise MwtError("the report directory must not be empty")
    directory = Path(directory)
    if not directory.is_dir():
        raise MwtError(f"{directory} is not a directory; give the folder that holds the "
                       "experiments' output directories (e.g. reports/)")
    path = directory / REPORT
    if (path.exists() or path.is_symlink()) and not path.is_file():
        raise MwtError(f"{path} exists and is not a regular file; mwt only replaces regular "
                       "files")
    if path.exists() and not force and not written_by_us(path):
        raise MwtError(f"{path} was not written by `mwt report`; pass --force to replace it, "
                       "or move it")
    found = find_experiments(directory)
    if not found:
        raise MwtError(f"{directory} holds no experiment results ({RECORD}); run e.g. `mwt "
                       f"experiment rq1 --preset cpu --out {directory / 'rq1'}` first")
    env = environment()
    lines = [MARK, TITLE, "",
             f"Report built {_now()} by `mwt report {directory}` (torch {env['torch']}, "
             f"torch-mwt {env['torch_mwt']}"
             f"{', commit ' + env['git_commit'] if env.get('git_commit') else ''}). Every "
             "number below comes from the runs recorded with it; figures labelled *paper* are "
             "the paper's published ones (A100 GPU, CIFAR-10/SVHN, 200 epochs), shown for "
             "comparison.", "", "## Contents", ""]
    for folder, record in found:
        rel = folder.relative_to(directory).as_posix()
        lines.append(f"- [{record['title']}](#{_anchor(record['title'])}) (`{rel}/`, preset "
                     f"{record['preset']})")
    lines += ["", "## How each experiment was run", ""]
    for _, record in found:
        e = record.get("environment", {})
        lines.append(f"- `{record['command']}`: torch {e.get('torch')}, torch-mwt "
                     f"{e.get('torch_mwt')}, commit {e.get('git_commit') or 'unknown'}, "
                     f"{e.get('machine')}; {record.get('started')} to {record.get('finished')}")
    lines.append("")
    lines += _searches(directory)
    for folder, record in found:
        rel = folder.relative_to(directory).as_posix()
        prefix = "" if rel == "." else rel + "/"
        lines.append(rq_page(record, folder, level=2, prefix=prefix))
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path


def _searches(directory: Path) -> list[str]:
    """The settings searches under ``directory`` (``tuning.md``, ``python -m
    mwt.experiments.tune``), embedded one heading level down, so the report shows how its
    preset was chosen."""
    lines = []
    for path in sorted(directory.rglob(TUNING)):
        rel = path.parent.relative_to(directory).as_posix()
        text = path.read_text().splitlines()
        body = [("#" + line) if line.startswith("#") else line for line in text]
        lines += body + ["", f"CSV: [{rel}/tuning.csv]({rel}/tuning.csv)", ""]
    return lines


def _anchor(title: str) -> str:
    """GitHub's heading anchor."""
    keep = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return keep.replace(" ", "-")
