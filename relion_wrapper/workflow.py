"""One External-job run: RELION inputs -> engine settings -> train and/or pick -> RELION outputs.

Re-running the job (RELION's Continue, or a Scheme running it again as micrographs
arrive) picks only micrographs without a finished coordinate file, rewrites the index so
it lists all of them, and reuses the job's model instead of training again.

Launched as N ranks (srun, mpirun or torchrun from RELION's queue script), rank r picks
micrographs r, r+N, ... of the input list (those without a coordinate file), rank 0
trains (the others wait for its model) and, once every rank has reported, writes the
index, RELION_OUTPUT_NODES.star, the pictures and (through run_job) the exit marker.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pupick_ext
from pupick_ext import (
    MODEL_FILE,
    AbortRequested,
    Coordinator,
    InputError,
    PickerModel,
    Picks,
    PupickError,
    RankInfo,
    extract_iter,
    first_line,
    load_model,
    pick_sharded,
    report_failure,
    train,
    write_atomic,
    write_coordinate_star,
    write_run_record,
)

from . import nodes, reports
from .job import JobDirectory
from .params import JobParams, Settings, build_settings
from .progress import ProgressLog
from .star_io import RelionMicrograph, read_labels, read_micrographs, read_particle_labels

log = logging.getLogger(__name__)

TRAINING_DIR = "training"
#: on abort, how long rank 0 waits for the other ranks to notice the abort file
ABORT_GRACE_SECONDS = 60
RUN_RECORD = "pupick_runs.json"
#: what every rank reports to rank 0 under once its share is picked (or it failed)
PICK_MESSAGE = "pick"
#: How run.out names each layout: "5" is what RELION 5.0 and 5.1 read (the 5.1 run is tested).
LAYOUT_NAMES = {"3.1": "3.1", "4": "4.0", "5": "5.0/5.1"}


@dataclass(frozen=True)
class JobInputs:
    """What RELION connected to the job, as the command line named it."""

    job_dir: str
    in_mics: str | None = None
    in_coords: str | None = None
    in_parts: str | None = None
    argv: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """What a run produced (for the summary and the tests)."""

    version: str = ""
    picked_now: list[str] = field(default_factory=list)
    coordinate_files: list[tuple[str, str]] = field(default_factory=list)
    model_path: Path | None = None
    trained: bool = False


def run(inputs: JobInputs, params: JobParams, job: JobDirectory, outcome: Outcome | None = None,
        ranks: RankInfo | None = None) -> Outcome:
    """Do the job described by ``inputs`` and ``params`` in ``job`` (raises on failure or abort).

    With ``ranks`` of several processes this process does its share (see the module
    docstring); a rank other than 0 reports its result, or its error, to rank 0 and
    writes nothing but its coordinate files.
    """
    ranks = ranks or RankInfo()
    if not ranks.active:
        return _run(inputs, params, job, outcome if outcome is not None else Outcome(), ranks, None)
    ranks.setup_threads(params.threads if params.threads > 1 else 0)
    coordinator = Coordinator(ranks, job.path)
    try:
        return _run(inputs, params, job, outcome if outcome is not None else Outcome(), ranks, coordinator)
    except BaseException as exc:  # before this rank reported (e.g. training failed): rank 0 must not wait
        report_failure(coordinator, PICK_MESSAGE, exc)
        raise


def _run(inputs: JobInputs, params: JobParams, job: JobDirectory, outcome: Outcome, ranks: RankInfo,
         coordinator: Coordinator | None) -> Outcome:
    project = Path.cwd()
    version, why = nodes.detect_version(project, inputs.job_dir, inputs.in_coords, params.relion_version)
    outcome.version = version
    log.info("RELION %s output layout (from %s)", LAYOUT_NAMES[version], why)
    settings = build_settings(params)
    if not inputs.in_mics:
        raise InputError(
            "no input micrographs: connect a micrographs STAR file (e.g. CtfFind/jobNNN/"
            "micrographs_ctf.star) to 'Input micrographs'"
        )
    micrographs = read_micrographs(inputs.in_mics)
    log.info("Input micrographs: %d in %s", len(micrographs), inputs.in_mics)
    if ranks.is_main:
        _append_run_record(job, inputs, params, settings, version)
    job.check_abort()

    model: PickerModel | None = None
    if params.trains:
        if coordinator is None:
            model = _train_or_reuse(inputs, params, settings, micrographs, job, outcome)
        else:
            model = _train_on_rank0(inputs, params, settings, micrographs, job, outcome, ranks, coordinator)
    if params.extracts:
        if model is None:
            assert params.model is not None
            log.info("Loading model %s", params.model)
            model = load_model(params.model)
        _pick(model, params, settings, micrographs, inputs, job, version, outcome, ranks, coordinator)
    elif coordinator is not None:  # mode train: nothing to pick, but rank 0 still hears from everyone
        pick_sharded([], lambda todo: iter(()), key=str, name=PICK_MESSAGE, ranks=ranks,
                     coordinator=coordinator, should_stop=job.abort_requested)
    return outcome


def _train_on_rank0(inputs: JobInputs, params: JobParams, settings: Settings,
                    micrographs: list[RelionMicrograph], job: JobDirectory, outcome: Outcome, ranks: RankInfo,
                    coordinator: Coordinator) -> PickerModel:
    """Rank 0 trains (or reuses the job's model); the other ranks wait for it and load it."""
    if ranks.is_main:
        try:
            model = _train_or_reuse(inputs, params, settings, micrographs, job, outcome)
        except BaseException as exc:
            coordinator.broadcast("model", {"ok": False, "error": first_line(exc, 500)})
            raise
        coordinator.broadcast("model", {"ok": True, "path": str(job.path / MODEL_FILE)})
        return model
    log.info("Waiting for rank 0 to train the model")
    message = coordinator.broadcast("model", None, should_stop=job.abort_requested)
    if not message.get("ok"):
        raise PupickError(f"rank 0 did not produce a model ({message.get('error', 'failed')})")
    outcome.model_path = Path(message["path"])
    return load_model(message["path"])


# ------------------------------------------------------------------ training
def _train_or_reuse(
    inputs: JobInputs,
    params: JobParams,
    settings: Settings,
    micrographs: list[RelionMicrograph],
    job: JobDirectory,
    outcome: Outcome,
) -> PickerModel:
    model_path = job.path / MODEL_FILE
    outcome.model_path = model_path
    if model_path.is_file():
        log.info(
            "Model %s exists from an earlier run of this job: training skipped (delete it to train again)",
            model_path,
        )
        return load_model(model_path)
    labels = _labels(inputs, micrographs)
    labelled = [m.entry for m in micrographs if m.entry.name in set(labels.names)]
    log.info("Training labels: %d particles on %d micrographs", len(labels), len(labelled))
    assert settings.train is not None
    log.info("Training settings: %s", _short(settings.train.to_dict()))
    workdir = job.path / TRAINING_DIR
    result = train(
        labelled,
        labels,
        settings.preprocess,
        settings.train,
        workdir,
        progress=ProgressLog("Training"),
        should_stop=job.abort_requested,
    )
    job.check_abort()
    result.model.save(model_path)  # atomic: a half-written model never looks finished
    outcome.trained = True
    log.info("Model saved: %s (recommended threshold %.3g)", model_path, result.recommended_threshold)
    reports.training_pictures(job.path, result)
    return result.model


def _labels(inputs: JobInputs, micrographs: list[RelionMicrograph]) -> Picks:
    if not inputs.in_coords and not inputs.in_parts:
        raise InputError(
            "training needs labelled particles: connect the Manual picking coordinates to "
            "'Input coordinates' (or selected particles to 'Input particles')"
        )
    tables = []
    if inputs.in_coords:
        tables.append(read_labels(inputs.in_coords, micrographs))
        log.info("Labels from %s: %d particles", inputs.in_coords, len(tables[-1]))
    if inputs.in_parts:
        tables.append(read_particle_labels(inputs.in_parts, micrographs))
        log.info("Labels from %s: %d particles (origin shifts added back)", inputs.in_parts, len(tables[-1]))
    labels = Picks.concat(tables)
    if len(labels) == 0:
        source = inputs.in_coords or inputs.in_parts
        raise InputError(f"no labelled particles on any micrograph of {inputs.in_mics}", source)
    return labels


# ------------------------------------------------------------------ picking
def _pick(
    model: PickerModel,
    params: JobParams,
    settings: Settings,
    micrographs: list[RelionMicrograph],
    inputs: JobInputs,
    job: JobDirectory,
    version: str,
    outcome: Outcome,
    ranks: RankInfo | None = None,
    coordinator: Coordinator | None = None,
) -> None:
    ranks = ranks or RankInfo()
    target = {
        m.relion_name: nodes.coordinate_path(inputs.job_dir, m.relion_name, params.suffix)
        for m in micrographs
    }
    extract_settings = settings.extract
    if ranks.active:
        extract_settings = dataclasses.replace(extract_settings, device=ranks.device(extract_settings.device))

    def say_skipped(todo: list[RelionMicrograph], done: list[RelionMicrograph]) -> None:
        log.info(
            "Picking %d micrograph(s); %d already have coordinates from an earlier run%s",
            len(todo),
            len(done),
            f" ({ranks.describe()}: micrographs {ranks.rank + 1}, {ranks.rank + 1 + ranks.world_size}, ... "
            f"of {len(micrographs)})" if ranks.active else "",
        )

    def pick(todo: list[RelionMicrograph]) -> Iterator[tuple[RelionMicrograph, Picks]]:
        if not todo:
            return
        by_name = {m.entry.name: m for m in todo}
        stream = extract_iter(model, [m.entry for m in todo], extract_settings, None,
                              progress=ProgressLog("Picking"), should_stop=job.abort_requested)
        for entry, picks in stream:
            yield by_name[entry.name], picks

    def write(micrograph: RelionMicrograph, picks: Picks) -> None:
        path = target[micrograph.relion_name]
        write_coordinate_star(picks, path)
        outcome.picked_now.append(micrograph.relion_name)
        log.info("%s: %d particles -> %s", micrograph.relion_name, len(picks), path)
        job.check_abort()

    try:
        result = pick_sharded(micrographs, pick, key=lambda m: m.entry.name, name=PICK_MESSAGE, ranks=ranks,
                              coordinator=coordinator,
                              finished=lambda m: Path(target[m.relion_name]).is_file(),
                              on_skip=say_skipped, write=write, should_stop=job.abort_requested)
        if not result.main:  # rank 0 writes the index, the nodes and the exit marker
            log.info("Picked %d particles on %d micrograph(s); rank 0 finishes the job", result.n_picks,
                     result.n_micrographs)
            return
        if coordinator is not None:
            log.info("All %d ranks finished: %d particles on %d micrograph(s)", ranks.world_size,
                     result.n_picks, result.n_micrographs)
    except AbortRequested:
        if coordinator is not None and ranks.is_main and coordinator.transport == "files":
            # let the other ranks see RELION_JOB_ABORT_NOW (they check it between micrographs) before
            # run_job removes it with the exit marker
            log.info("Abort: waiting up to %d s for the other ranks to stop", ABORT_GRACE_SECONDS)
            try:
                coordinator.gather(PICK_MESSAGE, {"ok": False, "error": "aborted"},
                                   timeout=ABORT_GRACE_SECONDS)
                coordinator.close()
            except PupickError:
                log.info("Some ranks are still running; they stop at their next micrograph or finish")
        raise
    finally:
        # Whatever happened, the index lists exactly the finished coordinate files (rank 0 writes it).
        if ranks.is_main:
            outcome.coordinate_files = _write_index(micrographs, target, inputs, job, version, params.suffix)
    log.info(
        "Picked %d particles on %d micrograph(s) in this run; the job now has coordinates for "
        "%d of %d micrographs",
        result.n_picks,
        result.n_micrographs,
        len(outcome.coordinate_files),
        len(micrographs),
    )
    _write_output_nodes(inputs, job, version, params.suffix)
    reports.picking_pictures(job.path, result.picked, outcome.coordinate_files, model, params)


def _write_index(
    micrographs: list[RelionMicrograph],
    target: dict[str, str],
    inputs: JobInputs,
    job: JobDirectory,
    version: str,
    suffix: str,
) -> list[tuple[str, str]]:
    rows = [
        (m.relion_name, target[m.relion_name]) for m in micrographs if Path(target[m.relion_name]).is_file()
    ]
    index = nodes.index_path(inputs.job_dir, version, suffix)
    if version == "3.1":
        assert inputs.in_mics is not None
        write_atomic(index, nodes.suffix_index_text(inputs.in_mics))
    else:
        write_atomic(index, nodes.autopick_index_text(rows, version))
    return rows


def _write_output_nodes(inputs: JobInputs, job: JobDirectory, version: str, suffix: str) -> None:
    index = nodes.index_path(inputs.job_dir, version, suffix)
    declared = [(index, nodes.COORDS_NODE_TYPE[version])]
    write_atomic(job.path / nodes.OUTPUT_NODES_FILE, nodes.output_nodes_text(declared, version))
    log.info("Output node: %s (type %s)", index, nodes.COORDS_NODE_TYPE[version])


# ------------------------------------------------------------------ record
def _short(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items() if v is not None)


def _append_run_record(
    job: JobDirectory, inputs: JobInputs, params: JobParams, settings: Settings, version: str
) -> None:
    """Every run leaves its command line, versions and settings beside its outputs (one entry per run)."""
    record = {
        "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *inputs.argv],
        "cwd": os.getcwd(),
        "pupick_version": getattr(pupick_ext, "__version__", "unknown"),
        "relion_layout": version,
        "ignored_arguments": inputs.ignored,
        "params": params.to_dict(),
        "preprocess": settings.preprocess.to_dict(),
        "train": settings.train.to_dict() if settings.train else None,
        "extract": settings.extract.to_dict(),
    }
    write_run_record(job.path / RUN_RECORD, record, append=True, indent=2)
