"""Projects: the default one every resource starts in, those made by the API, their resources."""

from __future__ import annotations

import time
import uuid
from typing import Any

from scaler.local.api.base import JSON, iso, not_found, project_id, unprocessable
from scaler.local.api.models.state import CloudState

OWNER_UUID = str(uuid.uuid5(uuid.NAMESPACE_URL, "scaler-local-account"))
OWNER_ID = 258992
_PURPOSES = (
    "Just trying out DigitalOcean",
    "Class project / Educational purposes",
    "Website or blog",
    "Web Application",
    "Service or API",
    "Mobile Application",
    "Machine learning / AI / Data processing",
    "IoT",
    "Operational / Developer tooling",
)
ENVIRONMENTS = ("Development", "Staging", "Production")


def default_project() -> JSON:
    """The account's default project."""
    return {
        "id": project_id(),
        "owner_uuid": OWNER_UUID,
        "owner_id": OWNER_ID,
        "name": "scaler local",
        "description": "",
        "purpose": "Website or blog",
        "environment": "Development",
        "is_default": True,
        "created_at": "2024-01-02T03:04:05Z",
        "updated_at": "2024-01-02T03:04:05Z",
        "resources": [],
    }


def all_projects(cloud: CloudState) -> list[JSON]:
    """The default project first, then the others (a project made default replaces it)."""
    made = list(cloud._state["projects"].values())
    if any(p["is_default"] for p in made):
        return made
    return [default_project(), *made]


def project_json(project: JSON) -> JSON:
    """A project as the API shows it."""
    return {k: v for k, v in project.items() if k != "resources"}


def find_project(cloud: CloudState, value: str) -> JSON:
    """A project by id, or `default` (404 when none)."""
    for project in all_projects(cloud):
        if value == project["id"] or (value == "default" and project["is_default"]):
            return project
    raise not_found()


def _purpose(value: Any) -> str:
    text = str(value or "")
    # DigitalOcean keeps a purpose it does not list as "Other: <text>".
    return text if not text or text in _PURPOSES else f"Other: {text}"


def update_project(project: JSON, body: JSON, *, creating: bool) -> None:
    """Apply a create or update body (name, description, purpose, environment, is_default)."""
    name = body.get("name", project.get("name"))
    if not isinstance(name, str) or not 1 <= len(name) <= 175:
        raise unprocessable("name is required and must be 1 to 175 characters.")
    environment = str(body.get("environment", project.get("environment")) or "")
    matching = [e for e in ENVIRONMENTS if e.lower() == environment.lower()]
    if environment and not matching:
        raise unprocessable(f"environment must be one of {', '.join(ENVIRONMENTS)}.")
    environment = matching[0] if matching else ""
    if creating and not body.get("purpose"):
        raise unprocessable("purpose is required.")
    project.update(
        name=name,
        description=str(body.get("description", project.get("description")) or ""),
        environment=environment,
        updated_at=iso(time.time()),
    )
    if "purpose" in body:
        project["purpose"] = _purpose(body["purpose"])
    if "is_default" in body:
        project["is_default"] = bool(body["is_default"])


def create_project(cloud: CloudState, body: JSON) -> JSON:
    """A new project from a create request."""
    ident = str(uuid.uuid4())
    now = iso(time.time())
    project: JSON = {
        "id": ident,
        "owner_uuid": OWNER_UUID,
        "owner_id": OWNER_ID,
        "is_default": False,
        "created_at": now,
        "updated_at": now,
        "resources": [],
    }
    update_project(project, body, creating=True)
    cloud._state["projects"][ident] = project
    cloud._dirty = True
    return project


def assign_resources(cloud: CloudState, project: JSON, urns: Any) -> list[str]:
    """Move the resources (URNs) into project, out of any other."""
    if not isinstance(urns, list) or not all(str(u).startswith("do:") for u in urns):
        raise unprocessable("resources must be a list of URNs (do:droplet:123, ...).")
    for other in cloud._state["projects"].values():
        other["resources"] = [u for u in other["resources"] if u not in urns]
    # The built-in default project holds whatever no other project does.
    if project["id"] in cloud._state["projects"]:
        project["resources"] += [u for u in urns if u not in project["resources"]]
    cloud._dirty = True
    return list(urns)


def resource_json(urn: str) -> JSON:
    """A project's resource as the API lists it."""
    return {"urn": urn, "assigned_at": iso(time.time()), "links": {}, "status": "ok"}
