"""RELION versions, output-node types, the coordinate-file path rule and the index files.

Everything here is pure (strings in, strings out) so it is checked against hand-written
files in ``tests/data/relion``. The facts and the RELION source files they come from are
listed in ``docs/relion.md``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

#: RELION versions the wrapper writes for ("4" covers 4.0, "5" covers 5.0).
VERSIONS: tuple[str, ...] = ("3.1", "4", "5")

#: Output-node type of a set of per-micrograph coordinate files, per RELION version.
#: 3.1: NODE_MIC_COORDS (src/pipeline_jobs.h); 4.0: LABEL_AUTOPICK_COORDS and 5.0: the
#: renamed LABEL_AUTOPICK_COORDS (src/pipeline_jobs.h of each).
COORDS_NODE_TYPE: dict[str, str] = {
    "3.1": "2",
    "4": "MicrographsCoords.star.relion.autopick",
    "5": "MicrographCoordsGroup.star.relion.autopick",
}

#: The column holding the node type in RELION_OUTPUT_NODES.star: an integer
#: (EMDL_PIPELINE_NODE_TYPE) in 3.1, a string label (EMDL_PIPELINE_NODE_TYPE_LABEL) since 4.0.
NODE_TYPE_COLUMN: dict[str, str] = {
    "3.1": "_rlnPipeLineNodeType",
    "4": "_rlnPipeLineNodeTypeLabel",
    "5": "_rlnPipeLineNodeTypeLabel",
}

OUTPUT_NODES_FILE = "RELION_OUTPUT_NODES.star"
AUTOPICK_INDEX_FILE = "autopick.star"

_JOB_DIR = re.compile(r"job\d{3}")


def normalise_version(value: str) -> str:
    """Map user spellings ('3.1', '3', '4.0', '5.0', 'relion-5') to one of VERSIONS; '' if unknown."""
    text = str(value).strip().lower().removeprefix("relion").strip("-_ v")
    if text in ("3", "3.1", "3.1.0", "3.1.1", "3.1.2", "3.1.3", "3.1.4"):
        return "3.1"
    major = text.split(".", 1)[0]
    if major in ("4", "5"):
        return major
    return ""


def job_prefix(job_dir: str) -> str:
    """The job directory as RELION names it inside the project: no leading './', one trailing '/'."""
    text = str(job_dir).strip()
    while text.startswith("./"):
        text = text[2:]
    return text.rstrip("/") + "/"


def decompose_pipeline_name(name: str) -> tuple[str, str, str]:
    """Split a file name as RELION's decomposePipelineFileName does: (prefix, 'jobNNN/', rest).

    The first '/jobDDD' directory after a slash marks the job; everything after the
    directory that follows it is the rest. A name without one is returned as ('', '', name).
    """
    slash = 0
    while True:
        slash = name.find("/", slash + 1)
        if slash < 0:
            return "", "", name
        if _JOB_DIR.match(name, slash + 1):
            end = name.find("/", slash + 6)
            if end < 0:
                end = len(name) - 1
            return name[: slash + 1], name[slash + 1 : end + 1], name[end + 1 :]


def without_extension(name: str) -> str:
    """RELION's FileName::withoutExtension: everything before the last '.'."""
    dot = name.rfind(".")
    return name if dot < 0 else name[:dot]


def coordinate_path(job_dir: str, micrograph_name: str, suffix: str) -> str:
    """Where RELION looks for a micrograph's coordinates written by this job.

    ``<job>/<micrograph name minus its leading Stage/jobNNN/, minus extension>_<suffix>.star``
    (autopicker.cpp getOutputRootName; preprocessing.cpp getCoordinateFileName with
    ``--coord_dir <job>/ --coord_suffix _<suffix>.star``).
    """
    _, _, rest = decompose_pipeline_name(micrograph_name)
    return f"{job_prefix(job_dir)}{without_extension(rest)}_{suffix}.star"


def suffix_index_path(job_dir: str, suffix: str) -> str:
    """The RELION 3.1 coordinate node: ``<job>/coords_suffix_<suffix>.star``."""
    return f"{job_prefix(job_dir)}coords_suffix_{suffix}.star"


def autopick_index_path(job_dir: str) -> str:
    """The RELION 4.0/5.0 coordinate node: ``<job>/autopick.star``."""
    return f"{job_prefix(job_dir)}{AUTOPICK_INDEX_FILE}"


def index_path(job_dir: str, version: str, suffix: str) -> str:
    """The coordinate node this job declares for ``version``."""
    return suffix_index_path(job_dir, suffix) if version == "3.1" else autopick_index_path(job_dir)


def suffix_index_text(micrographs_star: str) -> str:
    """Content of a 3.1 ``coords_suffix_*.star``: the micrographs STAR file name (read with ``>>``)."""
    return f"{micrographs_star}\n"


def _star_value(value: str) -> str:
    """A STAR token; RELION 3.1+ reads double-quoted strings, so names with blanks are quoted."""
    if value == "" or any(c.isspace() for c in value):
        return '"' + value.replace('"', "") + '"'
    return value


#: The version line RELION's MetaDataTable::write puts before each block (3.1 and 4.0: 30001).
STAR_VERSION_LINE: dict[str, str] = {"3.1": "# version 30001", "4": "# version 30001", "5": "# version 50001"}


def star_loop_text(
    block: str, columns: Sequence[str], rows: Sequence[Sequence[str]], version: str = "3.1"
) -> str:
    """One ``data_<block>`` loop in the layout RELION's MetaDataTable::write produces."""
    lines = ["", STAR_VERSION_LINE[version], "", f"data_{block}", "", "loop_ "]
    lines += [f"{column} #{i} " for i, column in enumerate(columns, start=1)]
    lines += [" ".join(_star_value(str(v)) for v in row) + " " for row in rows]
    lines += [" ", ""]
    return "\n".join(lines)


def autopick_index_text(rows: list[tuple[str, str]], version: str = "5") -> str:
    """Content of a 4.0/5.0 ``autopick.star``: table ``coordinate_files`` (micrograph, coordinate file)."""
    columns = ["_rlnMicrographName", "_rlnMicrographCoordinates"]
    return star_loop_text("coordinate_files", columns, rows, version)


def output_nodes_text(nodes: list[tuple[str, str]], version: str) -> str:
    """Content of ``RELION_OUTPUT_NODES.star``: table ``output_nodes`` (node name, node type)."""
    return star_loop_text("output_nodes", ["_rlnPipeLineNodeName", NODE_TYPE_COLUMN[version]], nodes, version)


# ------------------------------------------------------------------ version detection
def _read_text(path: Path, limit: int = 2_000_000) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(limit)
    except OSError:
        return ""


def _version_from_labels(text: str) -> str:
    """'4' or '5' from the node-type labels or the version comment of a 4.0+ STAR file; '' if unsure."""
    if re.search(
        r"\b(MicrographGroupMetadata|MicrographCoordsGroup|ParticleGroupMetadata|OptimiserData)\.", text
    ):
        return "5"
    if re.search(r"\b(MicrographsData|MicrographsCoords|ParticlesData|MicrographMoviesData)\.", text):
        return "4"
    match = re.search(r"^#\s*version\s+(\d+)", text, re.MULTILINE)
    if match and int(match.group(1)) >= 50000:
        return "5"
    return ""


def version_of_pipeline(path: Path) -> str:
    """The RELION version that wrote a ``default_pipeline.star`` (or a job's ``job_pipeline.star``)."""
    text = _read_text(path)
    if "_rlnPipeLineProcessTypeLabel" in text or "_rlnPipeLineNodeTypeLabel" in text:
        return _version_from_labels(text) or "4+"
    if "_rlnPipeLineProcessType" in text or "_rlnPipeLineNodeType" in text:
        return "3.1"
    return ""


def version_of_job_star(path: Path) -> str:
    """The RELION version that wrote a job's ``job.star`` (integer _rlnJobType in 3.1)."""
    text = _read_text(path)
    if "_rlnJobTypeLabel" in text:
        match = re.search(r"^#\s*version\s+(\d+)", text, re.MULTILINE)
        return "5" if match and int(match.group(1)) >= 50000 else "4+"
    if "_rlnJobType" in text:
        return "3.1"
    return ""


def version_of_coordinates(path: Path) -> str:
    """'3.1' for a ``coords_suffix_*.star`` node, '4+' for a ``coordinate_files`` table, '' otherwise."""
    if path.name.startswith("coords_suffix_"):
        return "3.1"
    text = _read_text(path, limit=100_000)
    if re.search(r"^data_coordinate_files\s*$", text, re.MULTILINE):
        return "4+"
    return ""


def detect_version(
    project_dir: Path, job_dir: str, in_coords: str | None = None, forced: str | None = None
) -> tuple[str, str]:
    """(version, how it was decided): forced > input coordinates > pipeline > job.star > default 5."""
    if forced:
        version = normalise_version(forced)
        if not version:
            from pupick_ext import SettingsError

            raise SettingsError(f"unknown RELION version {forced!r}; use 3.1, 4 or 5")
        return version, "--relion_version"
    project_dir = Path(project_dir)
    clues: list[tuple[str, str]] = []
    if in_coords:
        clues.append((version_of_coordinates(project_dir / in_coords), f"the layout of {in_coords}"))
    clues.append((version_of_pipeline(project_dir / "default_pipeline.star"), "default_pipeline.star"))
    clues.append(
        (version_of_pipeline(project_dir / job_prefix(job_dir) / "job_pipeline.star"), "job_pipeline.star")
    )
    clues.append((version_of_job_star(project_dir / job_prefix(job_dir) / "job.star"), "job.star"))
    major = next(((v, why) for v, why in clues if v), None)
    if major is None:
        return "5", "no RELION project files found; assuming 5 (force with parameter relion_version)"
    version, why = major
    if version != "4+":
        return version, why
    # 4.0 and 5.0 differ only in their node labels: look for them anywhere we can.
    for path in (
        project_dir / "default_pipeline.star",
        project_dir / job_prefix(job_dir) / "job_pipeline.star",
    ):
        found = _version_from_labels(_read_text(path))
        if found:
            return found, f"{why} and the node labels in {path.name}"
    job_star = version_of_job_star(project_dir / job_prefix(job_dir) / "job.star")
    if job_star in ("4+", "5"):
        return ("5" if job_star == "5" else "4"), f"{why} and the version line of job.star"
    return "5", f"{why}; 4.0 or 5 undecided, assuming 5 (force with parameter relion_version)"
