"""Live mode: read a cryoSPARC project through cryosparc-tools and write an External job.

The job gets the exposures and the labelled particles as inputs (provenance), an output
``particles`` of type particle with the ``location`` and ``pick_stats`` slots cryoSPARC's
pickers write (it plugs into Extract From Micrographs), and an event log with progress,
the threshold table and pictures. The job is marked completed, or failed with pupick's one-line
error; a Stop pressed in cryoSPARC (the job killed) is noticed by polling the job's status.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import httpx
from cryosparc.errors import APIError

from pupick_ext import AbortRequested, InputError, Picks, PupickError, atomic_path, first_line

from .connect import Credentials, check_workspace, connect, describe_api_error, find_output, find_project
from .errors import CryosparcError
from .fields import PARTICLE_SLOTS, Exposure, exposures_from_dataset, particles_to_picks, picks_to_particles
from .offline import package_version, write_settings_record
from .options import PickOptions
from .pipeline import check_shapes, run_pipeline

if TYPE_CHECKING:
    from cryosparc.controllers.job import ExternalJobController
    from cryosparc.controllers.project import ProjectController
    from cryosparc.dataset import Dataset
    from cryosparc.tools import CryoSPARC

logger = logging.getLogger(__name__)

Download = Literal["auto", "always", "never"]
MICROGRAPHS_INPUT = "micrographs"
LABELS_INPUT = "labelled_particles"
OUTPUT = "particles"
#: how often a running job's status is re-read to notice a Stop pressed in cryoSPARC
STOP_POLL_SECONDS = 15.0


@dataclass(frozen=True)
class SourceRef:
    """A job output: ``"J12"`` (default output name) or ``"J12:exposures_accepted"``."""

    job: str
    output: str

    @classmethod
    def parse(cls, text: str | SourceRef, default_output: str) -> SourceRef:
        if isinstance(text, SourceRef):
            return text
        job, _, output = text.strip().partition(":")
        if not job.upper().startswith("J") or not job[1:].isdigit():
            raise CryosparcError(f"{text!r} is not a job output; write J12 or J12:output_name")
        return cls(job.upper(), output or default_output)

    def __str__(self) -> str:
        return f"{self.job}.{self.output}"


@dataclass(frozen=True)
class LiveResult:
    """The External job that was written and what it holds."""

    project_uid: str
    job_uid: str
    n_particles: int
    model_path: Path | None
    workdir: Path


class JobReporter:
    """Progress, messages and pictures into the job's event log (and the Python log).

    Progress lines update one event per phase in place, at most every ``interval`` seconds.
    """

    def __init__(self, job: ExternalJobController, interval: float = 2.0) -> None:
        self.job = job
        self.interval = interval
        self._phase = 0
        self._last = 0.0

    def progress(self, done: int, total: int, message: str) -> None:
        now = time.monotonic()
        if done < total and now - self._last < self.interval:
            return
        self._last = now
        text = f"[{done}/{total}] {message}"
        logger.info("%s", text)
        self.job.log(text, name=f"progress-{self._phase}")

    def info(self, text: str) -> None:
        self._phase += 1
        self._last = 0.0
        logger.info("%s", text)
        self.job.log(text)

    def picture(self, png: Path, text: str) -> None:
        logger.info("%s: %s", text, png)
        self.job.log_plot(str(png), text)

    def warn(self, text: str) -> None:
        logger.warning("%s", text)
        self.job.log(text, level="warning")


#: What a failed cryosparc-tools request raises.
API_ERRORS: tuple[type[Exception], ...] = (APIError, httpx.HTTPError)


def _load_input(job: ExternalJobController, name: str, source: SourceRef) -> Dataset:
    try:
        return job.load_input(name)
    except API_ERRORS as err:
        raise describe_api_error(err, f"loading {source}") from None


def _download(project: ProjectController, exposure: Exposure, cache: Path) -> Path:
    target = cache / exposure.path.lstrip("/")
    root = os.path.normpath(os.path.abspath(cache))
    if os.path.commonpath([root, os.path.normpath(os.path.abspath(target))]) != root:
        raise InputError(
            f"micrograph path leads outside the download directory {cache} ('..'); refusing to write there",
            exposure.path,
        )
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s", exposure.path)
    try:
        with atomic_path(target) as tmp:
            project.download_file(exposure.path, target=tmp)
    except API_ERRORS as err:
        raise InputError(
            f"cannot download micrograph from cryoSPARC ({describe_api_error(err, 'download')})",
            exposure.path,
        ) from None
    return target


def local_micrographs(
    project: ProjectController, exposures: Sequence[Exposure], download: Download, cache: Path
) -> dict[str, Path]:
    """Exposure name -> readable local file: under the project directory, or downloaded.

    ``download="auto"`` reads from ``project.dir`` + ``micrograph_blob/path`` when that file is
    here (shared file system) and downloads it into ``cache`` otherwise; ``"always"`` always
    downloads; ``"never"`` fails when the file is not here.
    """
    project_dir = Path(str(project.dir))
    mounted = project_dir.is_dir()
    if download == "auto" and not mounted:
        logger.info(
            "project directory %s is not mounted here; downloading micrographs into %s", project_dir, cache
        )
    out: dict[str, Path] = {}
    for exposure in exposures:
        here = Path(exposure.path) if Path(exposure.path).is_absolute() else project_dir / exposure.path
        if download != "always" and here.is_file():
            out[exposure.name] = here
        elif download == "never":
            raise InputError(
                "micrograph not found here (project directory not mounted?); use --download auto", here
            )
        else:
            out[exposure.name] = _download(project, exposure, cache)
    return out


def _default_workdir(job: ExternalJobController, project_uid: str) -> Path:
    try:
        job_dir = Path(str(job.dir))
    except API_ERRORS:
        job_dir = None
    if job_dir is not None and job_dir.is_dir():
        return job_dir / "pupick"
    return Path.cwd() / f"pupick_{project_uid}_{job.uid}"


def run_live(
    project_uid: str,
    workspace_uid: str,
    exposures: str | SourceRef,
    particles: str | SourceRef | None,
    options: PickOptions,
    *,
    credentials: Credentials | None = None,
    cs: CryoSPARC | None = None,
    title: str = "pupick particles",
    workdir: str | Path | None = None,
    download: Download = "auto",
) -> LiveResult:
    """Train and/or pick through a cryoSPARC instance and save the picks to a new External job.

    Args:
        project_uid: e.g. ``"P3"``.
        workspace_uid: workspace for the new External job, e.g. ``"W1"``.
        exposures: the job output holding micrographs, ``"J12"`` (output ``exposures``) or
            ``"J12:exposures_accepted"``.
        particles: the job output holding labelled particles, ``"J13"`` (output ``particles``,
            e.g. Manual Picker) or ``"J20:particles_selected"``; needed to train.
        options: mode and picking parameters.
        credentials: where and who to log in as (ignored when ``cs`` is given).
        cs: an existing ``CryoSPARC`` session (for tools scripts and notebooks).
        title: title of the new job.
        workdir: model, checkpoints, pictures and downloads; default ``<job dir>/pupick`` when
            the project directory is mounted here, else ``./pupick_<P>_<J>``.
        download: ``auto``, ``always`` or ``never`` download micrographs (see
            :func:`local_micrographs`).

    Returns:
        The new job's uid and what it holds.

    Raises:
        CryosparcError: cannot connect or log in, or the project, workspace, job or output is
            unknown (no job is created then).
        PupickError: bad inputs or settings, engine failure; the job is marked failed with the
            message, and no particles are saved.
    """
    exposures_ref = SourceRef.parse(exposures, "exposures")
    particles_ref = None if particles is None else SourceRef.parse(particles, "particles")
    if options.trains and particles_ref is None:
        raise CryosparcError("training needs labelled particles: give --particles (e.g. a Manual Picker job)")
    if cs is None:
        if credentials is None:
            raise CryosparcError("give credentials or a CryoSPARC session")
        cs = connect(credentials)
    project = find_project(cs, project_uid)
    check_workspace(project, workspace_uid)
    find_output(project, exposures_ref.job, exposures_ref.output)
    if particles_ref is not None:
        find_output(project, particles_ref.job, particles_ref.output)

    try:
        job = project.create_external_job(
            workspace_uid, title=title, desc=_description(options, exposures_ref, particles_ref)
        )
    except API_ERRORS as err:
        raise describe_api_error(err, f"creating a job in {project_uid}-{workspace_uid}") from None
    logger.info("created External job %s-%s", project_uid, job.uid)
    try:
        job.connect(
            MICROGRAPHS_INPUT,
            exposures_ref.job,
            exposures_ref.output,
            slots=["micrograph_blob"],
            title="Micrographs",
        )
        if particles_ref is not None:
            job.connect(
                LABELS_INPUT,
                particles_ref.job,
                particles_ref.output,
                slots=["location"],
                title="Labelled particles",
            )
        if options.extracts:
            job.add_output(
                "particle", name=OUTPUT, slots=list(PARTICLE_SLOTS), title="Particles picked by pupick"
            )
    except (APIError, httpx.HTTPError, ValueError, TypeError) as err:
        failure = (
            describe_api_error(err, f"setting up job {job.uid}")
            if isinstance(err, API_ERRORS)
            else CryosparcError(f"setting up job {job.uid}: {err}")
        )
        job.stop(error=str(failure))
        raise failure from None

    work = Path(workdir) if workdir is not None else _default_workdir(job, project_uid)
    n_particles, model_path = 0, None
    stop = StopPoller(job)
    # Not ``with job.run():``, which sends traceback.format_exc() as the job's failure message
    # (what cryoSPARC shows as the error): the job gets pupick's one line instead.
    try:
        job.start("running")
    except API_ERRORS as err:
        raise describe_api_error(err, f"starting job {job.uid}") from None
    error = ""
    try:
        n_particles, model_path = _run_in_job(
            job, project, exposures_ref, particles_ref, options, work, download, stop
        )
    except AbortRequested as err:
        if not stop.killed:
            error = _one_line(err)
            raise
        raise CryosparcError(
            f"stopped: job {project_uid}-{job.uid} was {stop.status} in cryoSPARC; nothing was saved"
        ) from None
    except PupickError as err:
        error = _one_line(err)
        raise
    except API_ERRORS as err:
        described = describe_api_error(err, "cryoSPARC request")
        error = _one_line(described)
        raise described from None
    except Exception as err:  # a bug: the job still fails with one line (the traceback stays here)
        error = f"pupick failed unexpectedly: {type(err).__name__}: {_one_line(err)}"
        raise
    except BaseException:  # KeyboardInterrupt, SystemExit
        error = "pupick was interrupted"
        raise
    finally:
        _finish_job(job, error, stop)
    return LiveResult(project_uid, job.uid, n_particles, model_path, work)


def _one_line(err: BaseException) -> str:
    return first_line(err, 500)


def _finish_job(job: ExternalJobController, error: str, stop: StopPoller) -> None:
    """Mark the job completed, or failed with ``error`` (one line); leave a killed job killed."""
    if stop.killed:
        logger.info("job %s was %s in cryoSPARC; stopped", job.uid, stop.status)
        return
    try:
        if error:
            job.log(f"pupick failed: {error}", level="error")
        job.stop(error=error)
    except API_ERRORS as err:  # the server went away: say so once, keep the run's own error
        logger.warning("could not mark job %s %s: %s", job.uid, "failed" if error else "completed",
                       describe_api_error(err, "cryoSPARC request"))


class StopPoller:
    """``should_stop`` for the engine: True once the job is killed (Stop pressed in cryoSPARC's UI).

    The job's status is re-read through cryosparc-tools (``job.refresh()``) at most every
    ``interval`` seconds, so a Stop ends the run within about ``interval`` plus one step or one
    micrograph. A failed refresh (a network hiccup) is not a stop.
    """

    STOPPED = ("killed", "failed", "completed")

    def __init__(self, job: ExternalJobController, interval: float | None = None) -> None:
        self.job = job
        self.interval = STOP_POLL_SECONDS if interval is None else interval
        self.status = ""
        self._last = time.monotonic()

    @property
    def killed(self) -> bool:
        return self.status in self.STOPPED

    def __call__(self) -> bool:
        if self.killed:
            return True
        now = time.monotonic()
        if now - self._last < self.interval:
            return False
        self._last = now
        try:
            self.status = str(self.job.refresh().status)
        except API_ERRORS as err:
            logger.debug("could not read job %s's status: %s", self.job.uid, err)
            return False
        if self.killed:
            logger.warning("job %s is %s in cryoSPARC: stopping", self.job.uid, self.status)
        return self.killed


def _run_in_job(
    job: ExternalJobController,
    project: ProjectController,
    exposures_ref: SourceRef,
    particles_ref: SourceRef | None,
    options: PickOptions,
    work: Path,
    download: Download,
    stop: Callable[[], bool] | None = None,
) -> tuple[int, Path | None]:
    reporter = JobReporter(job)
    work.mkdir(parents=True, exist_ok=True)
    _write_settings(work, options, project.uid, job.uid, exposures_ref, particles_ref)
    reporter.info(f"pupick {package_version('pupick')}: mode {options.mode}; work directory {work}")
    exposures = exposures_from_dataset(
        _load_input(job, MICROGRAPHS_INPUT, exposures_ref), origin=str(exposures_ref)
    )
    local = local_micrographs(project, exposures, download, work / "micrographs")
    exposures = check_shapes(exposures, local)
    reporter.info(f"{len(exposures)} micrographs from {exposures_ref}")
    labels: Picks | None = None
    if particles_ref is not None and options.trains:
        labels = particles_to_picks(
            _load_input(job, LABELS_INPUT, particles_ref),
            exposures,
            origin=str(particles_ref),
            flip_y=options.flip_y,
        )
    if stop is not None and stop():
        raise AbortRequested("stopped before picking")
    result = run_pipeline(exposures, local, labels, options, work, reporter, should_stop=stop)
    if stop is not None and stop():  # a Stop during the last micrograph: save nothing
        raise AbortRequested("stopped before saving")
    if not options.extracts:
        reporter.info(f"training finished; use the model with --mode extract --model {result.model_path}")
        return 0, result.model_path
    dset = picks_to_particles(
        result.picks, min_dist_A=(result.particle_diameter or 0.0) / 2, flip_y=options.flip_y
    )
    expected = job.alloc_output(OUTPUT, 0)  # the fields this cryoSPARC expects on the output
    missing = [f for f in expected.descr() if f[0] not in set(dset.fields())]
    if missing:
        logger.info("adding fields this cryoSPARC expects: %s", ", ".join(f[0] for f in missing))
        dset.add_fields(missing)
    picture = result.pictures.get("picks")
    job.save_output(OUTPUT, dset, image=str(picture) if picture else None)
    if picture:
        try:
            job.set_tile_image(str(picture))
        except API_ERRORS as err:
            logger.warning("could not set the job's tile image: %s", err)
    reporter.info(f"saved {len(dset)} particles to output '{OUTPUT}'; connect it to Extract From Micrographs")

    return len(dset), result.model_path


def _description(options: PickOptions, exposures: SourceRef, particles: SourceRef | None) -> str:
    source = f"micrographs {exposures}" + (f", labels {particles}" if particles else "")
    return f"pupick ({options.mode}) on {source}. Picks in output `particles` (location + pick_stats)."


def _write_settings(
    work: Path,
    options: PickOptions,
    project_uid: str,
    job_uid: str,
    exposures: SourceRef,
    particles: SourceRef | None,
) -> None:
    """Settings, versions and command line next to the outputs (never credentials)."""
    write_settings_record(
        work,
        {
            "mode": "live",
            "project": project_uid,
            "job": job_uid,
            "exposures": str(exposures),
            "particles": None if particles is None else str(particles),
            "options": options.to_dict(),
        },
    )
