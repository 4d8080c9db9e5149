"""Tables and figures of the experiments, written atomically as CSV + Markdown and PNG.

A :class:`Table` is a list of row dicts with named columns; a column ``x`` with a partner
``x_std`` (a standard deviation over seeds or sub-tasks) is one "mean ± std" cell in Markdown and
two columns in the CSV. Every table has a ``source`` column: ``ours`` for our runs, or
``paper.SOURCE`` for the paper's figures shown beside them.
"""

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from mwt.io import atomic_write_bytes

OURS = "ours"


@dataclass
class Column:
    key: str
    label: str
    digits: int = 2      # decimals in Markdown (the CSV keeps full precision)


@dataclass
class Table:
    """``name``: the file stem (``table2`` -> ``table2.csv``, ``table2.md``)."""

    name: str
    title: str
    columns: list[Column]
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Markdown only: one line per value of ``index``, one column per (``series``, value column)
    # (the CSV stays long): (index Column, series key, value Columns).
    pivot: tuple | None = None
    embed: bool = True  # False: pages link the files instead of showing a long table

    def csv_columns(self) -> list[str]:
        keys = []
        for c in self.columns:
            keys.append(c.key)
            if any(f"{c.key}_std" in r for r in self.rows) or c.key in self.std_keys():
                keys.append(f"{c.key}_std")
        return keys

    def std_keys(self) -> set[str]:
        return {k[:-4] for r in self.rows for k in r if k.endswith("_std")}

    def to_csv(self) -> str:
        buf = io.StringIO()
        keys = self.csv_columns()
        writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in keys})
        return buf.getvalue()

    def to_markdown(self, level: int = 3) -> str:
        if self.pivot is not None:
            return self._pivot_markdown(level)
        lines = [f"{'#' * level} {self.title}", ""]
        lines.append("| " + " | ".join(c.label for c in self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            cells = [_cell(row.get(c.key), row.get(f"{c.key}_std"), c.digits)
                     for c in self.columns]
            if row.get("source", OURS) != OURS:
                cells = [f"*{v}*" if v else v for v in cells]
            lines.append("| " + " | ".join(cells) + " |")
        if not self.rows:
            lines.append("| " + " | ".join("" for _ in self.columns) + " |")
        if self.notes:
            lines.append("")
            lines.extend(self.notes if len(self.notes) == 1 else [f"- {n}" for n in self.notes])
        return "\n".join(lines) + "\n"

    def _pivot_markdown(self, level: int) -> str:
        index, series_key, values = self.pivot
        series = list(dict.fromkeys(r[series_key] for r in self.rows))
        # Our rows decide which lines there are; the paper's fill in beside them.
        ours = [r for r in self.rows if r.get("source", OURS) == OURS] or self.rows
        keys = sorted(dict.fromkeys(r[index.key] for r in ours))
        cells = {(r[index.key], r[series_key]): r for r in self.rows}
        head = [index.label] + [f"{s} {v.label}".strip() for s in series for v in values]
        lines = [f"{'#' * level} {self.title}", "", "| " + " | ".join(head) + " |",
                 "|" + "|".join("---" for _ in head) + "|"]
        for key in keys:
            line = [_cell(key, None, index.digits)]
            for s in series:
                row = cells.get((key, s), {})
                for v in values:
                    text = _cell(row.get(v.key), row.get(f"{v.key}_std"), v.digits)
                    paper = row.get("source", OURS) != OURS and row
                    line.append(f"*{text}*" if paper and text != "–" else text)
            lines.append("| " + " | ".join(line) + " |")
        if self.notes:
            lines.append("")
            lines.extend(self.notes if len(self.notes) == 1 else [f"- {n}" for n in self.notes])
        return "\n".join(lines) + "\n"

    def write(self, directory) -> list[Path]:
        directory = Path(directory)
        csv_path, md_path = directory / f"{self.name}.csv", directory / f"{self.name}.md"
        atomic_write_bytes(csv_path, self.to_csv().encode())
        atomic_write_bytes(md_path, self.to_markdown().encode())
        return [csv_path, md_path]


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _csv_value(value):
    if _missing(value):
        return ""
    if isinstance(value, float):
        return repr(round(value, 10))
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return value


def _cell(value, std, digits: int) -> str:
    if _missing(value):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    if isinstance(value, float) or (isinstance(value, int) and std is not None):
        text = f"{value:.{digits}f}"
        if not _missing(std):
            text += f" ± {std:.{digits}f}"
        return text
    return str(value)


def save_figure(fig, path) -> Path:
    """A matplotlib figure as a PNG, written atomically, then closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout(rect=(0, 0, 1, 0.96))  # room for the suptitle
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def percent(x) -> float | None:
    return None if _missing(x) else 100.0 * float(x)
