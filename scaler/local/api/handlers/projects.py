"""Projects under /v2/projects, and the resources in them."""

from __future__ import annotations

from scaler.local.api.base import ApiError, as_object
from scaler.local.api.models.projects import (
    all_projects,
    assign_resources,
    create_project,
    find_project,
    project_json,
    resource_json,
    update_project,
)
from scaler.local.api.models.state import CloudState
from scaler.local.api.routing import Reply, Request, paginate


def projects_list(cloud: CloudState, req: Request) -> Reply:
    return 200, paginate(req, "projects", [project_json(p) for p in all_projects(cloud)])


def projects_create(cloud: CloudState, req: Request) -> Reply:
    return 201, {"project": project_json(create_project(cloud, as_object(req.body)))}


def projects_get(cloud: CloudState, req: Request) -> Reply:
    return 200, {"project": project_json(find_project(cloud, req.params["project_id"]))}


def projects_update(cloud: CloudState, req: Request) -> Reply:
    project = find_project(cloud, req.params["project_id"])
    if project["id"] not in cloud._state["projects"]:
        raise ApiError(403, "The default project cannot be changed in the local cloud.")
    update_project(project, as_object(req.body), creating=False)
    cloud._dirty = True
    return 200, {"project": project_json(project)}


def projects_delete(cloud: CloudState, req: Request) -> Reply:
    project = find_project(cloud, req.params["project_id"])
    if project["is_default"]:
        raise ApiError(412, "cannot delete the default project")
    if project["resources"]:
        raise ApiError(412, "cannot delete a project with resources")
    del cloud._state["projects"][project["id"]]
    cloud._dirty = True
    return 204, None


def project_resources_list(cloud: CloudState, req: Request) -> Reply:
    project = find_project(cloud, req.params["project_id"])
    return 200, paginate(req, "resources", [resource_json(u) for u in project["resources"]])


def project_resources_assign(cloud: CloudState, req: Request) -> Reply:
    project = find_project(cloud, req.params["project_id"])
    urns = assign_resources(cloud, project, as_object(req.body).get("resources"))
    return 200, {"resources": [resource_json(u) for u in urns]}
