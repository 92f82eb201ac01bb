"""The routes table: every /v2 operation the local cloud answers, as the spec names its path.

Paths are DigitalOcean's OpenAPI templates (the tests check each is in the spec); the first
route whose pattern and method match a request answers it.
"""

from __future__ import annotations

from scaler.local.api.handlers import (
    account,
    actions,
    catalog,
    droplets,
    firewalls,
    images,
    ips,
    keys,
    lbs,
    monitoring,
    projects,
    tags,
    vpcs,
)
from scaler.local.api.routing import Route, route


def _ip_routes(kind: str) -> list[Route]:
    """Floating and reserved IPs: one pool of addresses, the same handlers under both paths."""
    base, param = f"/v2/{kind}s", "{" + kind + "}"
    h = ips.ip_handlers(kind)
    return [
        route("GET", base, h["list"]),
        route("POST", base, h["create"]),
        route("GET", f"{base}/{param}", h["get"]),
        route("DELETE", f"{base}/{param}", h["delete"]),
        route("GET", f"{base}/{param}/actions", h["actions"]),
        route("POST", f"{base}/{param}/actions", h["act"]),
        route("GET", f"{base}/{param}/actions/{{action_id}}", h["act_get"]),
    ]


ROUTES: list[Route] = [
    route("GET", "/v2/account", account.account),
    route("GET", "/v2/account/keys", keys.keys_list),
    route("POST", "/v2/account/keys", keys.keys_create),
    route("GET", "/v2/account/keys/{ssh_key_identifier}", keys.keys_get),
    route("PUT", "/v2/account/keys/{ssh_key_identifier}", keys.keys_update),
    route("DELETE", "/v2/account/keys/{ssh_key_identifier}", keys.keys_delete),
    route("GET", "/v2/actions", actions.actions_list),
    route("GET", "/v2/actions/{action_id}", actions.actions_get),
    route("GET", "/v2/droplets", droplets.droplets_list),
    route("POST", "/v2/droplets", droplets.droplets_create),
    route("DELETE", "/v2/droplets", droplets.droplets_delete_by_tag),
    route("GET", "/v2/droplets/{droplet_id}", droplets.droplets_get),
    route("DELETE", "/v2/droplets/{droplet_id}", droplets.droplets_delete),
    route("GET", "/v2/droplets/{droplet_id}/snapshots", droplets.droplet_snapshots),
    route("GET", "/v2/droplets/{droplet_id}/actions", droplets.droplet_actions_list),
    route("POST", "/v2/droplets/{droplet_id}/actions", droplets.droplet_actions_post),
    route("POST", "/v2/droplets/actions", droplets.droplet_actions_by_tag),
    route("GET", "/v2/droplets/{droplet_id}/actions/{action_id}", droplets.droplet_actions_get),
    route("GET", "/v2/images", images.images_list),
    route("GET", "/v2/images/{image_id}", images.images_get),
    route("PUT", "/v2/images/{image_id}", images.images_update),
    route("DELETE", "/v2/images/{image_id}", images.images_delete),
    route("GET", "/v2/images/{image_id}/actions", images.image_actions_list),
    route("POST", "/v2/images/{image_id}/actions", images.image_actions_post),
    route("GET", "/v2/images/{image_id}/actions/{action_id}", images.image_actions_get),
    route("GET", "/v2/snapshots", images.snapshots_list),
    route("GET", "/v2/snapshots/{snapshot_id}", images.snapshots_get),
    route("DELETE", "/v2/snapshots/{snapshot_id}", images.snapshots_delete),
    route("GET", "/v2/regions", catalog.regions),
    route("GET", "/v2/sizes", catalog.sizes),
    route("GET", "/v2/tags", tags.tags_list),
    route("POST", "/v2/tags", tags.tags_create),
    route("GET", "/v2/tags/{tag_id}", tags.tags_get),
    route("DELETE", "/v2/tags/{tag_id}", tags.tags_delete),
    route("POST", "/v2/tags/{tag_id}/resources", tags.tags_assign),
    route("DELETE", "/v2/tags/{tag_id}/resources", tags.tags_unassign),
    route("GET", "/v2/load_balancers", lbs.lbs_list),
    route("POST", "/v2/load_balancers", lbs.lbs_create),
    route("GET", "/v2/load_balancers/{lb_id}", lbs.lbs_get),
    route("PUT", "/v2/load_balancers/{lb_id}", lbs.lbs_update),
    route("DELETE", "/v2/load_balancers/{lb_id}", lbs.lbs_delete),
    route("POST", "/v2/load_balancers/{lb_id}/droplets", lbs.lbs_add_droplets),
    route("DELETE", "/v2/load_balancers/{lb_id}/droplets", lbs.lbs_remove_droplets),
    route("POST", "/v2/load_balancers/{lb_id}/forwarding_rules", lbs.lbs_add_rules),
    route("DELETE", "/v2/load_balancers/{lb_id}/forwarding_rules", lbs.lbs_remove_rules),
    route(
        "GET",
        "/v2/monitoring/metrics/load_balancer/droplets_health_checks",
        monitoring.lb_droplets_health_checks,
    ),
    *_ip_routes("floating_ip"),
    *_ip_routes("reserved_ip"),
    route("GET", "/v2/firewalls", firewalls.firewalls_list),
    route("POST", "/v2/firewalls", firewalls.firewalls_create),
    route("GET", "/v2/firewalls/{firewall_id}", firewalls.firewalls_get),
    route("PUT", "/v2/firewalls/{firewall_id}", firewalls.firewalls_update),
    route("DELETE", "/v2/firewalls/{firewall_id}", firewalls.firewalls_delete),
    route("POST", "/v2/firewalls/{firewall_id}/droplets", firewalls.firewalls_add_droplets),
    route("DELETE", "/v2/firewalls/{firewall_id}/droplets", firewalls.firewalls_remove_droplets),
    route("GET", "/v2/vpcs", vpcs.vpcs_list),
    route("POST", "/v2/vpcs", vpcs.vpcs_create),
    route("GET", "/v2/vpcs/{vpc_id}", vpcs.vpcs_get),
    route("PUT", "/v2/vpcs/{vpc_id}", vpcs.vpcs_update),
    route("PATCH", "/v2/vpcs/{vpc_id}", vpcs.vpcs_update),
    route("DELETE", "/v2/vpcs/{vpc_id}", vpcs.vpcs_delete),
    route("GET", "/v2/projects", projects.projects_list),
    route("POST", "/v2/projects", projects.projects_create),
    route("GET", "/v2/projects/{project_id}/resources", projects.project_resources_list),
    route("POST", "/v2/projects/{project_id}/resources", projects.project_resources_assign),
    # The real provider also reads, updates and deletes a project by id; the spec subset
    # does not carry that path.
    route("GET", "/v2/projects/{project_id}", projects.projects_get),
    route("PATCH", "/v2/projects/{project_id}", projects.projects_update),
    route("PUT", "/v2/projects/{project_id}", projects.projects_update),
    route("DELETE", "/v2/projects/{project_id}", projects.projects_delete),
]
