"""The routes the fake serves and the OpenAPI document that describes them.

cryosparc-tools 5.0 builds its client from ``GET {base}/api/cmd/openapi.json``: each
operation's ``summary`` (``"jobs.save_output"``) becomes a method, path parameters are filled
from positional arguments, then the request body; keyword arguments become query parameters
(cryosparc/api.py). So the only contract is the schema: summaries, parameter names and
locations, body media types and the ``$ref`` names of response models. The URL paths imitate
CryoSPARC's but are the fake's own choice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .state import FakeCryosparc

DATASET_MIME = "application/x-cryosparc-dataset"
STREAM_MIME = "application/octet-stream"


@dataclass(frozen=True)
class Request:
    """What a handler sees: path parameters, query (first value, or all values), body."""

    path: dict[str, str]
    query: dict[str, list[str]]
    body: Any

    def q(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


Handler = Callable[[FakeCryosparc, Request], Any]


@dataclass(frozen=True)
class Route:
    """One operation. ``body``: None, "json", "form", "dataset" or "stream";
    ``response``: a component model name, "string", "fields", "dataset" or "stream"."""

    method: str
    path: str
    summary: str
    handler: Handler
    query: tuple[str, ...] = ()
    required_query: tuple[str, ...] = ()
    body: str | None = None
    body_title: str = "Body"
    response: str = "string"
    public: bool = False

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path) + "$")

    def operation(self) -> dict[str, Any]:
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in re.findall(r"\{(\w+)\}", self.path)
        ]
        params += [
            {"name": n, "in": "query", "required": n in self.required_query, "schema": {}} for n in self.query
        ]
        op: dict[str, Any] = {
            "summary": self.summary,
            "parameters": params,
            "responses": {"200": self._response()},
        }
        if self.body == "json":
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"title": self.body_title}}},
            }
        elif self.body == "form":
            op["requestBody"] = {
                "required": True,
                "content": {"application/x-www-form-urlencoded": {"schema": {"title": self.body_title}}},
            }
        elif self.body in ("dataset", "stream"):
            mime = DATASET_MIME if self.body == "dataset" else STREAM_MIME
            op["requestBody"] = {
                "required": True,
                "content": {
                    mime: {"schema": {"title": self.body_title, "type": "string", "format": "binary"}}
                },
            }
        return op

    def _response(self) -> dict[str, Any]:
        if self.response == "dataset":
            content = {DATASET_MIME: {"schema": {"title": "Dataset", "type": "string", "format": "binary"}}}
        elif self.response == "stream":
            content = {STREAM_MIME: {"schema": {"title": "Stream", "type": "string", "format": "binary"}}}
        elif self.response == "string":
            content = {"application/json": {"schema": {"type": "string"}}}
        elif self.response == "fields":
            content = {
                "application/json": {"schema": {"type": "array", "items": {"type": "array", "items": {}}}}
            }
        else:
            content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{self.response}"}}}
        return {"description": "Successful Response", "content": content}


def _p(req: Request, name: str) -> str:
    return req.path[name]


# The handlers: thin adapters from HTTP to FakeCryosparc methods.
def _login(s: FakeCryosparc, r: Request) -> Any:
    form = r.body
    return s.login(form.get("username", ""), form.get("password", ""))


ROUTES: tuple[Route, ...] = (
    Route(
        "post", "/login", "login", _login, body="form", body_title="Body_login", response="Token", public=True
    ),
    Route("get", "/health", "health", lambda s, r: "OK", public=True),
    Route("get", "/users/me", "users.me", lambda s, r: s.user, response="User"),
    Route("get", "/config/version", "config.get_version", lambda s, r: s.version),
    Route(
        "get",
        "/projects/{project_uid}",
        "projects.find_one",
        lambda s, r: s.project(_p(r, "project_uid")),
        response="Project",
    ),
    Route(
        "get",
        "/projects/{project_uid}/directory",
        "projects.get_directory",
        lambda s, r: s.project_directory(_p(r, "project_uid")),
    ),
    Route(
        "get",
        "/projects/{project_uid}/files",
        "projects.download_file",
        lambda s, r: s.project_file(_p(r, "project_uid"), r.q("path", "") or ""),
        query=("path",),
        response="stream",
    ),
    Route(
        "get",
        "/workspaces/{project_uid}/{workspace_uid}",
        "workspaces.find_one",
        lambda s, r: s.workspace(_p(r, "project_uid"), _p(r, "workspace_uid")),
        response="Workspace",
    ),
    Route(
        "get",
        "/jobs/{project_uid}/{job_uid}",
        "jobs.find_one",
        lambda s, r: s.find_job(_p(r, "project_uid"), _p(r, "job_uid")),
        response="Job",
    ),
    Route(
        "get",
        "/jobs/{project_uid}/{job_uid}/directory",
        "jobs.get_directory",
        lambda s, r: s.job_directory(_p(r, "project_uid"), _p(r, "job_uid")),
    ),
    Route(
        "post",
        "/projects/{project_uid}/workspaces/{workspace_uid}/jobs",
        "jobs.create",
        lambda s, r: s.create_job(
            _p(r, "project_uid"),
            _p(r, "workspace_uid"),
            r.q("type") or "",
            r.q("title", "") or "",
            r.q("description", "") or "",
        ),
        query=("type", "title", "description", "created_by_job_uid", "enable_bench"),
        required_query=("type",),
        body="json",
        body_title="Params",
        response="Job",
    ),
    Route(
        "put",
        "/jobs/{project_uid}/{job_uid}/external/inputs/{input_name}",
        "jobs.add_external_input",
        lambda s, r: s.add_external_input(
            _p(r, "project_uid"), _p(r, "job_uid"), _p(r, "input_name"), r.body
        ),
        body="json",
        body_title="InputSpec",
        response="Job",
    ),
    Route(
        "put",
        "/jobs/{project_uid}/{job_uid}/external/outputs/{output_name}",
        "jobs.add_external_output",
        lambda s, r: s.add_external_output(
            _p(r, "project_uid"), _p(r, "job_uid"), _p(r, "output_name"), r.body
        ),
        body="json",
        body_title="OutputSpec",
        response="Job",
    ),
    Route(
        "put",
        "/jobs/{project_uid}/{job_uid}/connect/{input_name}",
        "jobs.connect",
        lambda s, r: s.connect(
            _p(r, "project_uid"),
            _p(r, "job_uid"),
            _p(r, "input_name"),
            r.q("source_job_uid") or "",
            r.q("source_output_name") or "",
        ),
        query=("source_output_name", "source_job_uid"),
        required_query=("source_output_name", "source_job_uid"),
        response="Job",
    ),
    Route(
        "get",
        "/jobs/{project_uid}/{job_uid}/inputs/{input_name}/dataset",
        "jobs.load_input",
        lambda s, r: s.load_input(_p(r, "project_uid"), _p(r, "job_uid"), _p(r, "input_name")),
        query=("force_join", "slots"),
        response="dataset",
    ),
    Route(
        "get",
        "/jobs/{project_uid}/{job_uid}/outputs/{output_name}/dataset",
        "jobs.load_output",
        lambda s, r: s.load_output(_p(r, "project_uid"), _p(r, "job_uid"), _p(r, "output_name")),
        query=("version", "slots"),
        response="dataset",
    ),
    Route(
        "post",
        "/jobs/{project_uid}/{job_uid}/outputs/{output_name}/fields",
        "jobs.get_output_fields",
        lambda s, r: s.output_fields(_p(r, "project_uid"), _p(r, "job_uid"), _p(r, "output_name")),
        body="json",
        body_title="Dtype Params",
        response="fields",
    ),
    Route(
        "post",
        "/jobs/{project_uid}/{job_uid}/outputs/{output_name}/dataset",
        "jobs.save_output",
        lambda s, r: s.save_output(_p(r, "project_uid"), _p(r, "job_uid"), _p(r, "output_name"), r.body),
        query=("filename", "version"),
        body="dataset",
        body_title="Dataset",
        response="Job",
    ),
    Route(
        "put",
        "/jobs/{project_uid}/{job_uid}/outputs/{output_name}/image",
        "jobs.set_output_image",
        lambda s, r: s.set_output_image(_p(r, "project_uid"), _p(r, "job_uid"), _p(r, "output_name"), r.body),
        body="json",
        body_title="GridFSAsset",
        response="Job",
    ),
    Route(
        "put",
        "/jobs/{project_uid}/{job_uid}/tile_image",
        "jobs.set_tile_image",
        lambda s, r: s.set_tile_image(_p(r, "project_uid"), _p(r, "job_uid"), r.body),
        body="json",
        body_title="GridFSAsset",
        response="Job",
    ),
    Route(
        "patch",
        "/jobs/{project_uid}/{job_uid}/running",
        "jobs.mark_running",
        lambda s, r: s.set_status(
            _p(r, "project_uid"), _p(r, "job_uid"), r.q("status", "running") or "running"
        ),
        query=("status",),
        response="Job",
    ),
    Route(
        "patch",
        "/jobs/{project_uid}/{job_uid}/completed",
        "jobs.mark_completed",
        lambda s, r: s.set_status(_p(r, "project_uid"), _p(r, "job_uid"), "completed"),
        response="Job",
    ),
    Route(
        "patch",
        "/jobs/{project_uid}/{job_uid}/failed",
        "jobs.mark_failed",
        lambda s, r: s.set_status(_p(r, "project_uid"), _p(r, "job_uid"), "failed", r.q("error")),
        query=("error",),
        response="Job",
    ),
    Route(
        "post",
        "/jobs/{project_uid}/{job_uid}/events/text",
        "jobs.add_event_log",
        lambda s, r: s.add_event(
            _p(r, "project_uid"), _p(r, "job_uid"), r.body, r.q("type", "text") or "text"
        ),
        query=("type",),
        body="json",
        body_title="Text",
        response="TextEvent",
    ),
    Route(
        "put",
        "/jobs/{project_uid}/{job_uid}/events/{event_id}/text",
        "jobs.update_event_log",
        lambda s, r: s.update_event(
            _p(r, "project_uid"), _p(r, "job_uid"), _p(r, "event_id"), r.body, r.q("type")
        ),
        query=("type",),
        body="json",
        body_title="Text",
        response="TextEvent",
    ),
    Route(
        "post",
        "/jobs/{project_uid}/{job_uid}/events/image",
        "jobs.add_image_log",
        lambda s, r: s.add_image_event(_p(r, "project_uid"), _p(r, "job_uid"), r.body, r.q("text", "") or ""),
        query=("text", "flags"),
        required_query=("text",),
        body="json",
        body_title="Images",
        response="ImageEvent",
    ),
    Route(
        "post",
        "/assets/{project_uid}/{job_uid}",
        "assets.upload",
        lambda s, r: s.upload_asset(
            _p(r, "project_uid"), _p(r, "job_uid"), r.body, r.q("filename"), r.q("format")
        ),
        query=("filename", "format"),
        body="stream",
        body_title="Stream",
        response="GridFSAsset",
    ),
)

#: Prefix under which the client expects the API (cryosparc/constants.py API_SUFFIX).
API_PREFIX = "/api/cmd"


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document the client downloads on connect."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method] = route.operation()
    models = sorted({r.response for r in ROUTES if r.response[0].isupper()})
    return {
        "openapi": "3.1.0",
        "info": {"title": "CryoSPARC API (pupick loopback fake)", "version": FakeCryosparc.version},
        "paths": paths,
        "components": {"schemas": {name: {"title": name, "type": "object"} for name in models}},
    }


def openapi_bytes() -> bytes:
    return json.dumps(openapi_document()).encode()
