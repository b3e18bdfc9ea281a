"""The run record: every run leaves its settings, version and command line beside its outputs.

``pupick`` writes ``<command>_run.json`` per output directory, ``pupick-relion`` appends one
entry per run to the job's ``pupick_runs.json``, ``pupick-cryosparc`` writes
``pupick_cryosparc.json``; each host chooses the keys, this module the writing (atomic,
JSON, paths and other objects as text, a list that grows by one entry per run).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .fsio import write_atomic

log = logging.getLogger(__name__)


def write_run_record(path: str | Path, record: Mapping[str, Any], append: bool = False,
                     indent: int = 1) -> None:
    """Write ``record`` as JSON at ``path`` (atomically; values JSON lacks, such as paths, as text).

    With ``append`` the file holds a list, one entry per run, and ``record`` is added to it
    (an unreadable file is started anew, with a warning: the record must never fail a run
    that did its work); such a list file ends with a newline.
    """
    path = Path(path)
    if not append:
        write_atomic(path, json.dumps(dict(record), indent=indent, default=str))
        return
    runs: list[Any] = []
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            runs = loaded if isinstance(loaded, list) else []
        except (OSError, ValueError):
            log.warning("%s is unreadable; starting a new record", path)
    runs.append(dict(record))
    write_atomic(path, json.dumps(runs, indent=indent, default=str) + "\n")
