"""A stateful DigitalOcean API v2 stand-in on loopback: the local cloud's control plane.

Run it with `scaler local up` (background; prints `export K=V` lines), with
`scaler local up --foreground` (both take `--delay SECONDS` for every delay and `--rate-limit N`
for the per-minute budget), or in Python::

    with LocalCloud(Path(".scaler/local"), port=0, network=42) as cloud:
        os.environ.update(cloud.env())  # python-digitalocean, Packer, Terraform find it there

It listens on 127.0.0.1 only. Any non-empty `Authorization: Bearer <token>` is accepted (missing
or empty: 401). Answers follow DigitalOcean's published OpenAPI schema (the tests check them).

Endpoints (under /v2; a trailing slash is ignored; HEAD answers like GET without a body):
  account             GET /account
  SSH keys            GET|POST /account/keys, GET|PUT|DELETE /account/keys/{id or fingerprint}
  droplets            GET /droplets (tag_name, name), POST /droplets (name, or names for many),
                      DELETE /droplets?tag_name=, GET|DELETE /droplets/{id},
                      GET /droplets/{id}/snapshots
  droplet actions     GET|POST /droplets/{id}/actions, GET /droplets/{id}/actions/{action_id},
                      POST /droplets/actions?tag_name=; types: shutdown, power_off, power_on,
                      reboot, power_cycle, snapshot, rename, resize, enable_backups,
                      disable_backups, enable_ipv6, password_reset
  actions             GET /actions, GET /actions/{id}
  images              GET /images (private=true, type=distribution|application|snapshot,
                      tag_name), GET|PUT|DELETE /images/{id or slug}
  image actions       GET|POST /images/{id}/actions (transfer), GET /images/{id}/actions/{aid}
  snapshots           GET /snapshots (resource_type), GET|DELETE /snapshots/{id}
  regions, sizes      GET /regions, GET /sizes
  tags                GET|POST /tags, GET|DELETE /tags/{name}, POST|DELETE /tags/{name}/resources
  load balancers      GET|POST /load_balancers, GET|PUT|DELETE /load_balancers/{id},
                      POST|DELETE /load_balancers/{id}/droplets and .../forwarding_rules
  floating IPs        GET|POST /floating_ips, GET|DELETE /floating_ips/{ip},
                      GET|POST /floating_ips/{ip}/actions (assign, unassign),
                      GET /floating_ips/{ip}/actions/{action_id}
  reserved IPs        the same under /reserved_ips (one pool: an address shows under both)
  firewalls           GET|POST /firewalls, GET|PUT|DELETE /firewalls/{id},
                      POST|DELETE /firewalls/{id}/droplets (real droplets enforce them, firewall.py)
  VPCs                GET|POST /vpcs, GET|PUT|PATCH|DELETE /vpcs/{id} (a region's default VPC
                      answers by its id; an ip_range is data, never dialled)
  projects            GET|POST /projects, GET|PATCH|PUT|DELETE /projects/{id or default},
                      GET|POST /projects/{id}/resources (URNs)

Like the real API: lists are paginated (`page`, `per_page` default 20, at most 200,
`links.pages` first/prev/next/last as absolute URLs, `meta.total`); errors are JSON
`{"id", "message", "request_id"}`; every /v2 answer carries `ratelimit-limit` (the hourly
budget, 5,000), `ratelimit-remaining` and `ratelimit-reset` (epoch seconds); past
`rate_limit_per_minute` requests (default 250) in the last 60 s a token gets 429 with
`retry-after` (seconds). A droplet with an action in progress (its creation included) refuses
another action with 422 `Droplet already has a pending event.`. Action look-ups under
/images/{id}/actions and the IP actions go by action id alone: Packer 1.6.6 polls its image
transfer with the two ids swapped.

Time (class Delays, seconds, changeable at run time): a droplet is `new` for `droplet_boot`,
then `active`; actions stay `in-progress` for `action` (`snapshot` for snapshots, `transfer`
for image transfers, each plus `*_per_gb` per GB of image); a load balancer is `new` for
`load_balancer`. DigitalOcean's lags, off by default and on with `--timing realistic`
(Delays.realistic()): `pending_after` (422 pending event just after an action completed),
`image_listing` (a new snapshot missing from image and snapshot lists), `lb_update` (403 on a
load balancer change while it applies the last), `droplet_delete` (a deleted droplet answers as
`archive`, out of lists, before 404). Always, as DigitalOcean: 422 on an IP assignment to a
droplet with a pending event, on a transfer into a region that holds the image, and on health
check values outside its ranges (interval and timeout 3-300 s, thresholds 2-10). Nothing runs in the
background: each request first settles what is due by the clock, in order, so a restart
picks up where time has gone.

Effects, done when the action completes: creation lays out the droplet's root and starts its
listeners (Machines.create); shutdown and power_off stop them (halt), power_on starts them
(boot); snapshot copies the root into a new private image (type snapshot, min_disk_size = the
droplet's disk, size_gigabytes from the bytes copied, regions = the droplet's); transfer adds
a region to an image; rename and resize change the droplet (resize wants it off); assign and
unassign move a floating IP.

Requests, with a spec (`LocalCloud(spec=PATH)`, `scaler local up --spec PATH` or
SCALER_LOCAL_SPEC: DigitalOcean's OpenAPI file with its $refs inlined): the query and JSON body
of every operation the spec describes are checked before its handler runs, and refused as
DigitalOcean refuses them (400 for a wrong JSON type, 422 for a missing field, a value outside
its enum, range or pattern); an operation the spec does not describe passes through (see
`validation`). The test suite turns it on for every local cloud.

Addresses, for network number N (1-254; default 42; two clouds never share one): droplet k
has public 127.N.1.k and private 127.N.2.k, floating/reserved IPs are 127.N.3.k, load
balancers 127.N.4.k (k = 1..253, reused after a delete once the range wraps). Base images
(public, type base, fixed ids): debian-12-x64 150000001, ubuntu-22-04-x64 150000002,
ubuntu-24-04-x64 150000003, debian-9-x64 150000004, debian-11-x64 150000005. New ids
count up from: droplets 100000001, SSH keys 41000001, snapshots 170000001, actions 900000001.

State: `state_dir/state.json` (written atomically after every change) and
`state_dir/machines/` (Machines'); a restart restores droplets, images, keys, tags, load
balancers and IPs and boots the active droplets' listeners again. A server started by
`scaler local up` also writes `state_dir/server.json` (pid, port, network) and logs to
`state_dir/server.log`.

Control API under /_local/ (no auth, not rate-limited, not logged or counted), for tests,
benchmarks and subprocesses (LocalCloud has the same in Python):
  GET /_local/health            {"ok", "pid", "url", "network", "droplets", "images", ...}
  GET|DELETE /_local/requests   the request log, oldest first (the last 10,000):
                                {"requests": [{method, path, query, status, time, template,
                                duration}]}; DELETE empties it
  GET|DELETE /_local/counters   {"counters": {"GET /v2/droplets/{id}": n, ...}}; DELETE resets
                                (a template names its first path parameter {id})
  GET|PUT /_local/delays        {"delays": {...}}; PUT any subset of the Delays fields
  GET|POST|DELETE /_local/faults  list, add one, clear all. POST bodies, by "kind":
    {"kind": "fail", "method": "GET" or "*", "path": regex (full match, no query),
     "status": 500, "nth": 1, "times": 1, "message": opt., "retry_after": opt. seconds}
        the nth matching request from now fails with status, and the `times - 1` after it
    {"kind": "latency", "method": "*", "path": regex, "seconds": 0.5, "times": null}
        matching requests wait that long first (null: forever)
    {"kind": "error_action", "droplet_id": opt., "action_type": opt., "times": 1}
        the next matching droplet action (creation is type "create") ends errored, no effect
    {"kind": "stall", "droplet_id": id} or {"kind": "stall", "name": regex, "times": 1}
        that droplet (still new), or the next created droplets whose name matches, stay new
    {"kind": "drop", "method": "POST", "path": regex, "seconds": 0, "times": 1}
        the request is carried out, then its answer is lost: after `seconds` the connection
        closes with no response (a dropped connection, or a stall past the client's timeout)
  POST /_local/reset            forget every resource, fault, log entry and counter

The package, split as API stand-ins such as moto split theirs: `base` (constants, values, the error
answer), `catalog` (regions, sizes, base images), `models/` (the state, one module per resource
family, and `clock`, which completes actions), `handlers/` (the /v2 handlers per family), `routes`
(the routes table), `routing` (requests, matching, pagination), `validation` (requests checked
against the spec), `control` and `faults` (the /_local/ API), `httpd` (HTTP plumbing), `cloud`
(LocalCloud) and `server` (the background process).
"""

from __future__ import annotations

from scaler.local.api.base import (
    DEFAULT_PORT,
    DEFAULT_STATE_DIR,
    DROPLET_LIMIT,
    HOURLY_LIMIT,
    JSON,
    LOG_LIMIT,
    PACE,
    TIMINGS,
    TOKEN,
    ApiError,
    Delays,
    LocalCloudError,
    RequestRecord,
    ServerInfo,
)
from scaler.local.api.catalog import DEFAULT_REGION, fingerprint
from scaler.local.api.cloud import LocalCloud
from scaler.local.api.faults import Faults
from scaler.local.api.routes import ROUTES
from scaler.local.api.routing import Handler, Request, Route
from scaler.local.api.server import (
    health,
    iter_env_lines,
    launch,
    running,
    serve,
    shutdown,
    timing_delays,
)

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_REGION",
    "DEFAULT_STATE_DIR",
    "DROPLET_LIMIT",
    "HOURLY_LIMIT",
    "JSON",
    "LOG_LIMIT",
    "PACE",
    "ROUTES",
    "TIMINGS",
    "TOKEN",
    "ApiError",
    "Delays",
    "Faults",
    "Handler",
    "LocalCloud",
    "LocalCloudError",
    "Request",
    "RequestRecord",
    "Route",
    "ServerInfo",
    "fingerprint",
    "health",
    "iter_env_lines",
    "launch",
    "running",
    "serve",
    "shutdown",
    "timing_delays",
]
