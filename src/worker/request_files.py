"""A SimulationRequest from files on disk: what `simjail run`, `simjail submit` and the demo send.

`request_from_files` reads a design (build123d `.py` or `.step`), an optional environment, and
objectives and options as YAML or JSON, applies the overrides, and validates the whole request
(pydantic's ValidationError names the bad field). A file that cannot be read or parsed is an
InvalidRequest naming it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from common.models.simulation import SimulationRequest
from worker.errors import InvalidRequest


def load_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML (or, for `.json`, JSON) file holding a mapping; empty for an empty file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidRequest(f"{what}: cannot read {path}: {e.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise InvalidRequest(
            f"{what}: {path} is not valid {path.suffix[1:] or 'YAML'}: {e}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidRequest(f"{what}: {path} must hold a mapping")
    return data


def source_fields(path: Path, what: str) -> dict[str, Any]:
    """The CadSource fields for a file; validated with the whole request."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidRequest(f"{what}: cannot read {path}: {e.strerror}") from None
    if path.suffix.lower() in (".step", ".stp"):
        return {"step": data}
    # Invalid UTF-8 becomes U+FFFD, which the build reports as a syntax error in the source.
    return {"code": data.decode("utf-8", "replace")}


def default_request_id(design: Path, fields: list[Any]) -> str:
    """`<design name>-<hash of what defines the run>`: running the same thing again overwrites
    its own artifacts; examples/ramp/design.py is called ramp-design."""
    digest = hashlib.sha256(json.dumps(fields, default=str).encode()).hexdigest()[:8]
    name = design.stem
    if name == "design":
        name = f"{design.resolve().parent.name}-{name}"
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:48]
    stem = stem.lstrip("-_")  # a request id starts with a letter or digit (_x.py, .d/design.py)
    return f"{stem or 'design'}-{digest}"


def request_from_files(
    design: Path,
    *,
    environment: Path | None = None,
    objectives: Path | None = None,
    options: Path | None = None,
    duration_s: float | None = None,
    render: bool | None = None,
    full_video: bool | None = None,
    request_id: str | None = None,
) -> SimulationRequest:
    """The request these files describe; `duration_s`, `render` and `full_video` override the
    options file.
    Raises InvalidRequest (a file) or pydantic's ValidationError (a field)."""
    design_fields = source_fields(design, "design")
    env_fields = source_fields(environment, "environment") if environment else None
    objectives_data = load_mapping(objectives, "objectives") if objectives else {}
    options_data = load_mapping(options, "options") if options else {}
    if duration_s is not None:
        options_data["duration_s"] = duration_s
    if render is not None:
        options_data["render"] = render
    if full_video is not None:
        options_data["full_video"] = full_video
    rid = request_id or default_request_id(design, [design_fields, objectives_data, options_data])
    return SimulationRequest.model_validate(
        {
            "request_id": rid,
            "design": design_fields,
            "environment": env_fields,
            "objectives": objectives_data,
            "options": options_data,
        }
    )
