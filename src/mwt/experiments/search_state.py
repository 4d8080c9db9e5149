"""What the two settings searches (``tune``, ``tune_reuse``) keep in their output directory.

Each search writes ``search.json`` in its ``--out``: its format, the rows finished so far and the
commands that made them, so a stopped search continues where it was and its Markdown page says
how every row was made. Both searches read and extend that file the same way; only their rows
differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mwt.errors import MwtError
from mwt.io import read_json

STATE = "search.json"


def read_state(out: Path, fmt: str) -> dict:
    """The search state in ``out`` ({} when there is none); another tool's file is refused."""
    path = Path(out) / STATE
    state = read_json(path) if path.is_file() else {}
    if state and state.get("format") != fmt:
        raise MwtError(f"{path} was not written by this search; choose another --out")
    return state


def commands_with(state: dict, prog: str, argv: list[str] | None) -> list[str]:
    """The state's commands with this one last (a command run again moves to the end)."""
    command = f"python -m {prog} " + " ".join(argv if argv is not None else sys.argv[1:])
    return [c for c in state.get("commands", []) if c != command] + [command]
