"""In-memory CryoSPARC instance behind the loopback fake: users, projects, jobs, datasets, events.

Everything the workflow can change is recorded so tests can assert on it: job status and the
error given to ``mark_failed``, event log entries, uploaded assets, and the bytes of every
dataset saved to an output (decoded back with ``Dataset.load``).

The response bodies are built with cryosparc-tools' own pydantic models (the models the real
server's OpenAPI schema is generated from), so the client validates them exactly as it would
validate a real server's answers.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryosparc.dataset import Dataset
from cryosparc.models.asset import GridFSAsset
from cryosparc.models.auth import Token
from cryosparc.models.event import ImageEvent, TextEvent
from cryosparc.models.job import Job
from cryosparc.models.job_spec import (
    Connection,
    Input,
    InputResult,
    InputSlot,
    JobSpec,
    Output,
    OutputResult,
    OutputSlot,
)
from cryosparc.models.project import Project
from cryosparc.models.resource import ResourceSpec
from cryosparc.models.user import User
from cryosparc.models.workspace import Workspace

#: Fields of the slots an external job may declare on a particle output, as cryoSPARC's
#: pickers write them (cryosparc-tools tests/conftest.py T20S_PARTICLES_PASSTHROUGH plus
#: ``micrograph_psize_A``).
SLOT_FIELDS: dict[str, list[list[Any]]] = {
    "location": [
        ["micrograph_uid", "<u8"],
        ["exp_group_id", "<u4"],
        ["micrograph_path", "|O"],
        ["micrograph_shape", "<u4", [2]],
        ["micrograph_psize_A", "<f4"],
        ["center_x_frac", "<f4"],
        ["center_y_frac", "<f4"],
        ["min_dist_A", "<f4"],
    ],
    "pick_stats": [
        ["ncc_score", "<f4"],
        ["power", "<f4"],
        ["template_idx", "<u4"],
        ["angle_rad", "<f4"],
    ],
}


class FakeError(Exception):
    """An API error the fake answers with ``status`` and ``{"detail": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _object_id() -> str:
    return secrets.token_hex(12)


@dataclass
class FakeJob:
    """A job and everything recorded about it."""

    model: Job
    outputs: dict[str, Dataset] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    status_history: list[str] = field(default_factory=list)
    failed_error: str | None = None
    saved: dict[str, list[bytes]] = field(default_factory=dict)
    output_images: dict[str, str] = field(default_factory=dict)
    tile_image: str | None = None

    @property
    def status(self) -> str:
        return str(self.model.status)

    def saved_dataset(self, name: str) -> Dataset:
        """The last dataset saved to output ``name``, decoded from the bytes that arrived."""
        return Dataset.load(io.BytesIO(self.saved[name][-1]))

    def event_texts(self, type_: str | None = None) -> list[str]:
        return [e["text"] for e in self.events if type_ is None or e["type"] == type_]


class FakeCryosparc:
    """The state of one fake instance: one user, projects with workspaces and jobs."""

    version = "v5.0.3"

    def __init__(self, email: str = "ali@example.com", password: str = "correct horse") -> None:
        self.lock = threading.RLock()
        self.email = email
        self.password_sha256 = hashlib.sha256(password.encode()).hexdigest()
        self.tokens: set[str] = set()
        self.user = User(_id=_object_id(), name="Ali", first_name="Ali", last_name="Example")
        self.projects: dict[str, Project] = {}
        self.workspaces: dict[tuple[str, str], Workspace] = {}
        self.jobs: dict[tuple[str, str], FakeJob] = {}
        self.assets: dict[str, tuple[str, bytes]] = {}
        self.calls: list[str] = []
        self.project_dirs: dict[str, Path] = {}
        #: Pretend the server cannot serve these project files (e.g. to test fallbacks).
        self.unavailable_files: set[str] = set()
        #: Project directories as the server reports them (default: the real directory); set one
        #: to a path that does not exist here to act like an instance on another machine.
        self.reported_dirs: dict[str, str] = {}
        #: Press Stop in the UI: the n-th time a running External job is read (jobs.find_one,
        #: what job.refresh() asks), it is killed first. None: never.
        self.kill_running_on_read: int | None = None

    # ----------------------------------------------------------------- building the scene
    def add_project(self, uid: str, directory: Path, title: str = "Test project") -> None:
        num = int(uid[1:])
        self.projects[uid] = Project(
            _id=_object_id(),
            uid=uid,
            project_dir=str(directory),
            owner_user_id=self.user.id,
            title=title,
            size_last_updated=_now(),
            uid_num=num,
        )
        self.project_dirs[uid] = Path(directory)

    def add_workspace(self, project_uid: str, uid: str, title: str = "Workspace") -> None:
        self.workspaces[(project_uid, uid)] = Workspace(
            _id=_object_id(),
            uid=uid,
            project_uid=project_uid,
            workspace_type="base",
            title=title,
            uid_num=int(uid[1:]),
            project_uid_num=int(project_uid[1:]),
        )

    def _next_job_uid(self, project_uid: str) -> str:
        numbers = [int(j[1:]) for (p, j) in self.jobs if p == project_uid]
        return f"J{max(numbers, default=0) + 1}"

    def _new_job(
        self, project_uid: str, workspace_uid: str, type_: str, title: str, uid: str | None = None
    ) -> FakeJob:
        uid = uid or self._next_job_uid(project_uid)
        spec = JobSpec(type=type_, ui_tile_width=1, ui_tile_height=1, resource_spec=ResourceSpec())
        model = Job(
            _id=_object_id(),
            uid=uid,
            project_uid=project_uid,
            workspace_uids=[workspace_uid],
            spec=spec,
            job_dir=uid,
            job_dir_size_last_updated=_now(),
            uid_num=int(uid[1:]),
            project_uid_num=int(project_uid[1:]),
            status_num=0,
            build_errors=[],
            title=title,
        )
        job = FakeJob(model=model)
        self.jobs[(project_uid, uid)] = job
        (self.project_dirs[project_uid] / uid).mkdir(parents=True, exist_ok=True)
        return job

    def add_completed_job(
        self,
        project_uid: str,
        workspace_uid: str,
        uid: str,
        type_: str,
        title: str,
        outputs: dict[str, tuple[str, Dataset]],
    ) -> FakeJob:
        """A finished upstream job (Patch CTF, Manual Picker, ...) with datasets on its outputs.

        ``outputs`` maps output name -> (datatype, dataset); slots are the dataset's prefixes.
        """
        job = self._new_job(project_uid, workspace_uid, type_, title, uid=uid)
        for name, (dtype, dset) in outputs.items():
            prefixes = sorted({f.split("/")[0] for f in dset.fields() if "/" in f})
            job.model.spec.outputs.root[name] = Output(
                type=dtype,
                title=name,
                slots=[OutputSlot(name=p, dtype=p) for p in prefixes],
                results=[
                    OutputResult(
                        name=p,
                        dtype=p,
                        versions=[0],
                        metafiles=[f"{uid}/{uid}_{name}.cs"],
                        num_items=[len(dset)],
                    )
                    for p in prefixes
                ],
                num_items=len(dset),
            )
            job.outputs[name] = dset
        job.model.status = "completed"
        return job

    # ------------------------------------------------------------------------- lookups
    def check_token(self, authorization: str | None) -> None:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise FakeError(401, "Not authenticated")
        if authorization.split(" ", 1)[1] not in self.tokens:
            raise FakeError(401, "Invalid or expired token")

    def project(self, uid: str) -> Project:
        if uid not in self.projects:
            raise FakeError(404, f"Project {uid} not found")
        return self.projects[uid]

    def job(self, project_uid: str, uid: str) -> FakeJob:
        self.project(project_uid)
        if (project_uid, uid) not in self.jobs:
            raise FakeError(404, f"Job {project_uid}-{uid} not found")
        return self.jobs[(project_uid, uid)]

    def find_job(self, project_uid: str, uid: str) -> Job:
        job = self.job(project_uid, uid)
        if (self.kill_running_on_read is not None and job.model.spec.type == "snowflake"
                and job.status == "running"):
            self.kill_running_on_read -= 1
            if self.kill_running_on_read <= 0:
                self.kill_running_on_read = None
                job.model.status = "killed"
                job.status_history.append("killed")
        return job.model

    def external_job(self, project_uid: str, uid: str) -> FakeJob:
        job = self.job(project_uid, uid)
        if job.model.spec.type != "snowflake":
            raise FakeError(422, f"Job {project_uid}-{uid} is not an External job")
        return job

    # ------------------------------------------------------------------ the operations
    def login(self, username: str, password: str) -> Token:
        if username != self.email or password != self.password_sha256:
            raise FakeError(401, "Incorrect email or password")
        token = secrets.token_urlsafe(16)
        self.tokens.add(token)
        return Token(access_token=token, token_type="bearer")

    def workspace(self, project_uid: str, uid: str) -> Workspace:
        self.project(project_uid)
        if (project_uid, uid) not in self.workspaces:
            raise FakeError(404, f"Workspace {project_uid}-{uid} not found")
        return self.workspaces[(project_uid, uid)]

    def create_job(
        self, project_uid: str, workspace_uid: str, type_: str, title: str, description: str
    ) -> Job:
        self.workspace(project_uid, workspace_uid)
        if type_ != "snowflake":
            raise FakeError(422, f"The fake only creates External (snowflake) jobs, not {type_!r}")
        job = self._new_job(project_uid, workspace_uid, type_, title)
        job.model.description = description
        return job.model

    def add_external_input(self, project_uid: str, job_uid: str, name: str, spec: dict[str, Any]) -> Job:
        job = self.external_job(project_uid, job_uid)
        self._require_status(job, {"building", "running", "waiting"}, "add inputs")
        slots = [
            InputSlot(name=s, dtype=s, required=True) if isinstance(s, str) else InputSlot.model_validate(s)
            for s in spec.get("slots", [])
        ]
        job.model.spec.inputs.root[name] = Input(
            type=spec["type"],
            title=spec.get("title") or name,
            description=spec.get("description", ""),
            slots=slots,
            count_min=spec.get("count_min", 0),
            count_max=spec.get("count_max", "inf"),
        )
        return job.model

    def connect(
        self, project_uid: str, job_uid: str, input_name: str, source_job_uid: str, source_output: str
    ) -> Job:
        job = self.external_job(project_uid, job_uid)
        self._require_status(job, {"building"}, "connect inputs")
        source = self.job(project_uid, source_job_uid)
        if source_output not in source.model.spec.outputs.root:
            raise FakeError(422, f"Job {source_job_uid} has no output {source_output}")
        if input_name not in job.model.spec.inputs.root:
            raise FakeError(422, f"Job {job_uid} has no input {input_name}")
        output = source.model.spec.outputs.root[source_output]
        target = job.model.spec.inputs.root[input_name]
        if target.type != output.type:
            raise FakeError(422, f"Cannot connect {output.type} output to {target.type} input")
        available = {s.name for s in output.slots}
        missing = [s.name for s in target.slots if s.required and s.name not in available]
        if missing:
            raise FakeError(422, f"Output {source_job_uid}.{source_output} lacks required slots {missing}")
        results = [
            InputResult(
                name=s.name, dtype=s.dtype, job_uid=source_job_uid, output=source_output, result=s.name
            )
            for s in output.slots
        ]
        target.connections.append(Connection(job_uid=source_job_uid, output=source_output, results=results))
        return job.model

    def add_external_output(self, project_uid: str, job_uid: str, name: str, spec: dict[str, Any]) -> Job:
        job = self.external_job(project_uid, job_uid)
        self._require_status(job, {"building", "running", "waiting"}, "add outputs")
        slots = [
            OutputSlot(name=s, dtype=s) if isinstance(s, str) else OutputSlot.model_validate(s)
            for s in spec.get("slots", [])
        ]
        unknown = [s.dtype for s in slots if s.dtype not in SLOT_FIELDS]
        if unknown:
            raise FakeError(422, f"The fake does not know slot types {unknown}")
        job.model.spec.outputs.root[name] = Output(
            type=spec["type"],
            title=spec.get("title") or name,
            slots=slots,
            passthrough=spec.get("passthrough"),
        )
        return job.model

    def output_fields(self, project_uid: str, job_uid: str, name: str) -> list[list[Any]]:
        job = self.job(project_uid, job_uid)
        if name not in job.model.spec.outputs.root:
            raise FakeError(404, f"Job {job_uid} has no output {name}")
        fields: list[list[Any]] = []
        for slot in job.model.spec.outputs.root[name].slots:
            fields += [[f"{slot.name}/{f[0]}", *f[1:]] for f in SLOT_FIELDS[slot.dtype]]
        return fields

    def load_output(self, project_uid: str, job_uid: str, name: str) -> Dataset:
        job = self.job(project_uid, job_uid)
        if name not in job.outputs:
            raise FakeError(404, f"Job {job_uid} output {name} has no results")
        return job.outputs[name]

    def load_input(self, project_uid: str, job_uid: str, name: str) -> Dataset:
        job = self.job(project_uid, job_uid)
        if name not in job.model.spec.inputs.root:
            raise FakeError(404, f"Job {job_uid} has no input {name}")
        connections = job.model.spec.inputs.root[name].connections
        if not connections:
            raise FakeError(422, f"Input {name} of job {job_uid} is not connected")
        parts = [self.load_output(project_uid, c.job_uid, c.output) for c in connections]
        return parts[0] if len(parts) == 1 else Dataset.append(*parts)

    def save_output(self, project_uid: str, job_uid: str, name: str, body: bytes) -> Job:
        job = self.external_job(project_uid, job_uid)
        self._require_status(job, {"running", "waiting"}, "save outputs")
        if name not in job.model.spec.outputs.root:
            raise FakeError(404, f"Job {job_uid} has no output {name}")
        dset = Dataset.load(io.BytesIO(body))
        expected = {f[0] for f in self.output_fields(project_uid, job_uid, name)}
        missing = sorted(expected - set(dset.fields()))
        if missing:
            raise FakeError(422, f"Dataset for output {name} lacks fields {missing}")
        job.saved.setdefault(name, []).append(body)
        job.outputs[name] = dset
        job.model.spec.outputs.root[name].num_items = len(dset)
        return job.model

    def set_status(self, project_uid: str, job_uid: str, status: str, error: str | None = None) -> Job:
        job = self.external_job(project_uid, job_uid)
        job.model.status = status
        job.status_history.append(status)
        if status == "failed":
            job.failed_error = error or ""
            if error:
                self._add_event(job, "error", error)
        return job.model

    def _add_event(self, job: FakeJob, type_: str, text: str, **extra: Any) -> dict[str, Any]:
        event = {"id": _object_id(), "type": type_, "text": text, **extra}
        job.events.append(event)
        return event

    def add_event(self, project_uid: str, job_uid: str, text: str, type_: str) -> TextEvent:
        job = self.job(project_uid, job_uid)
        event = self._add_event(job, type_, text)
        return TextEvent(_id=event["id"], project_uid=project_uid, job_uid=job_uid, type=type_, text=text)

    def update_event(
        self, project_uid: str, job_uid: str, event_id: str, text: str | None, type_: str | None
    ) -> TextEvent:
        job = self.job(project_uid, job_uid)
        for event in job.events:
            if event["id"] == event_id:
                event["text"] = text if text is not None else event["text"]
                event["type"] = type_ or event["type"]
                event["updates"] = event.get("updates", 0) + 1
                return TextEvent(
                    _id=event_id,
                    project_uid=project_uid,
                    job_uid=job_uid,
                    type=event["type"],
                    text=event["text"],
                )
        raise FakeError(404, f"Event {event_id} not found")

    def add_image_event(
        self, project_uid: str, job_uid: str, images: list[dict[str, Any]], text: str
    ) -> ImageEvent:
        job = self.job(project_uid, job_uid)
        for image in images:
            if image.get("fileid") not in self.assets:
                raise FakeError(422, f"Unknown asset {image.get('fileid')}")
        event = self._add_event(job, "image", text, images=images)
        return ImageEvent(_id=event["id"], project_uid=project_uid, job_uid=job_uid, type="image", text=text)

    def upload_asset(
        self, project_uid: str, job_uid: str, data: bytes, filename: str | None, fmt: str | None
    ) -> GridFSAsset:
        self.job(project_uid, job_uid)
        if not data:
            raise FakeError(422, "Empty asset")
        fileid = _object_id()
        name = filename or f"asset.{fmt}"
        self.assets[fileid] = (name, data)
        return GridFSAsset(fileid=fileid, filename=name, filetype=fmt or name.rsplit(".", 1)[-1])

    def set_output_image(self, project_uid: str, job_uid: str, name: str, asset: dict[str, Any]) -> Job:
        job = self.external_job(project_uid, job_uid)
        if asset.get("fileid") not in self.assets:
            raise FakeError(422, "Unknown asset")
        job.output_images[name] = asset["fileid"]
        return job.model

    def set_tile_image(self, project_uid: str, job_uid: str, asset: dict[str, Any]) -> Job:
        job = self.external_job(project_uid, job_uid)
        if asset.get("fileid") not in self.assets:
            raise FakeError(422, "Unknown asset")
        job.tile_image = asset["fileid"]
        return job.model

    def project_directory(self, project_uid: str) -> str:
        project = self.project(project_uid)
        return self.reported_dirs.get(project_uid, project.project_dir)

    def job_directory(self, project_uid: str, job_uid: str) -> str:
        self.job(project_uid, job_uid)
        return f"{self.project_directory(project_uid)}/{job_uid}"

    def project_file(self, project_uid: str, path: str) -> bytes:
        root = self.project_dirs[self.project(project_uid).uid].resolve()
        target = (root / path).resolve()
        if root not in target.parents or path in self.unavailable_files or not target.is_file():
            raise FakeError(404, f"File {path} not found in project {project_uid}")
        return target.read_bytes()

    @staticmethod
    def _require_status(job: FakeJob, allowed: set[str], action: str) -> None:
        if job.status not in allowed:
            raise FakeError(422, f"Cannot {action} while job {job.model.uid} is {job.status}")

    # ------------------------------------------------------------------ test helpers
    def external_jobs(self, project_uid: str = "P1") -> list[FakeJob]:
        return [j for (p, _), j in self.jobs.items() if p == project_uid and j.model.spec.type == "snowflake"]
