"""A Terraform stand-in for fast rollout tests: it serves a state and plans, records the exact
command lines the rollout hands to Terraform, and runs each droplet's web server for real.

The stack it plays: `digitalocean_droplet.wp_node[N]` (count, image = lookup(var.wp_node_images,
N, var.image_slug)), a load balancer `digitalocean_loadbalancer.wp_lb` listing them in
droplet_ids, and a database droplet `digitalocean_droplet.db` nothing may change. Each droplet's
private address is a loopback address of its own (127.0.0.k) with a real HTTP server on one
shared port, answering as its image says (`Web.answers`), so the rollout's health checks,
warm-up and gates are real HTTP.
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import python_terraform
from conftest import QuietHandler

from scaler.terraform import NoState, Result, TerraformFailed
from scaler.tfvars import get_tfvar

WEB = "digitalocean_droplet.wp_node"
LB = "digitalocean_loadbalancer.wp_lb"
DB = "digitalocean_droplet.db"
PIN_VAR = "wp_node_images"

STACK_TF = """\
variable "image_slug" {}
variable "wp_node_images" {
  type    = map(string)
  default = {}
}
# the fake plays this stack: wp_node[N] with image = lookup(var.wp_node_images, N, ...)
"""

Answer = Callable[[str, int], int]
"""How an image answers: (path, the how-many-th request to this droplet) -> status."""


def always(status: int) -> Answer:
    return lambda path, n: status


class Web:
    """Loopback web servers, one per droplet address, all on one port."""

    def __init__(self, answers: dict[str, Answer]) -> None:
        self.answers = answers
        self.servers: dict[str, ThreadingHTTPServer] = {}
        self.images: dict[str, str] = {}
        self.next_host = 10
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()

    def new_address(self) -> str:
        """A loopback address nobody here serves on the shared port yet."""
        while True:
            self.next_host += 1
            address = f"127.0.0.{self.next_host}"
            with socket.socket() as sock:
                try:
                    sock.bind((address, self.port))
                except OSError as err:
                    if err.errno != errno.EADDRINUSE:
                        raise
                    continue
            return address

    def start(self, address: str, image: str) -> None:
        answer = self.answers.get(image, always(200))
        count = [0]
        lock = threading.Lock()

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                with lock:
                    count[0] += 1
                    n = count[0]
                status = answer(self.path, n)
                body = b"ok\n" if status < 400 else b"broken\n"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer((address, self.port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers[address] = server
        self.images[address] = image

    def stop(self, address: str) -> None:
        server = self.servers.pop(address, None)
        if server is not None:
            server.shutdown()
            server.server_close()

    def close(self) -> None:
        for address in list(self.servers):
            self.stop(address)


@dataclass
class Droplet:
    id: int
    image: str
    public: str
    private: str
    name: str


@dataclass
class FakeTerraform:
    """The scaler.rollout.Runner a test hands in; `lines` are the command lines run."""

    directory: Path
    web: Web
    count: int = 3
    image: str = "100"
    lines: list[str] = field(default_factory=list)
    # called before each apply with its plan's replaced addresses; raising fails the apply
    before_apply: Callable[[list[str]], None] = lambda _: None
    # extra resource changes every plan shows (to make the guard refuse one)
    extra_changes: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.next_id = 1000
        self.droplets: dict[str, Droplet] = {}
        for index in range(self.count):
            self.droplets[f"{WEB}[{index}]"] = self._make(index, self.image)
        self.db = self._make_db()
        self.plans: dict[str, dict[str, Any]] = {}
        self._cmd = python_terraform.Terraform(working_dir=str(self.directory))

    def _make(self, index: int, image: str) -> Droplet:
        self.next_id += 1
        private = self.web.new_address()
        self.web.start(private, image)
        return Droplet(
            self.next_id, image, f"127.9.0.{self.next_id % 250}", private, f"wp-node-{index:02d}"
        )

    def _make_db(self) -> Droplet:
        return Droplet(1, "debian-12-x64", "127.9.1.1", "127.9.2.1", "db-01")

    # -- what the rollout calls

    def run(self, command: str, *args: str, ok: Any = (0,), **options: Any) -> Result:
        options.setdefault("no_color", python_terraform.IsFlagged)
        pins = options.pop("var", None)
        line = self._cmd.generate_cmd_string(command, *args, **options)
        line[0] = "terraform"
        if pins is not None:
            # python-terraform writes a map to a temporary var file: shown by its content
            at = line.index("-no-color")
            line.insert(at, f"-var-file=<{json.dumps(pins, sort_keys=True)}>")
        shown = " ".join(line).replace(str(self.directory), "DIR")
        if command == "show":
            return Result(0, json.dumps(self.plans[args[0]]), "")
        self.lines.append(shown)
        if command == "plan":
            self._plan(options, (pins or {}).get(PIN_VAR))
        elif command == "apply":
            self._apply(args[0])
        return Result(0, "", "")

    def show_plan_json(self, planfile: Path) -> dict[str, Any]:
        return dict(json.loads(self.run("show", str(Path(planfile).resolve()), json=True).stdout))

    def state_pull(self) -> str:
        if not self.droplets:
            raise NoState(self.directory)
        return json.dumps(self.state())

    # -- the stack

    def wanted(self, pins: dict[str, str] | None, var_files: list[str]) -> dict[str, str]:
        slug = str(get_tfvar(Path(var_files[-1]), "image_slug"))
        return {a: (pins or {}).get(a[len(WEB) + 1 : -1], slug) for a in self.droplets}

    def _plan(self, options: dict[str, Any], pins: dict[str, str] | None) -> None:
        wanted = self.wanted(pins, options["var_file"])
        replace = set(options.get("replace") or ())
        changes: list[dict[str, Any]] = []
        replaced = []
        for address, droplet in sorted(self.droplets.items()):
            if droplet.image != wanted[address] or address in replace:
                replaced.append(address)
                actions = ["create", "delete"]
            else:
                actions = ["no-op"]
            changes.append(
                {"address": address, "type": "digitalocean_droplet", "change": {"actions": actions}}
            )
        lb_actions = ["update"] if replaced else ["no-op"]
        changes.append(
            {"address": LB, "type": "digitalocean_loadbalancer", "change": {"actions": lb_actions}}
        )
        changes.append(
            {"address": DB, "type": "digitalocean_droplet", "change": {"actions": ["no-op"]}}
        )
        changes.extend(self.extra_changes)
        self.plans[str(options["out"])] = {
            "variables": {"image_slug": {"value": ""}, PIN_VAR: {"value": pins or {}}},
            "resource_changes": changes,
            "replaced": replaced,
            "wanted": wanted,
        }

    def _apply(self, planfile: str) -> None:
        plan = self.plans[planfile]
        self.before_apply(plan["replaced"])
        for address in plan["replaced"]:
            old = self.droplets[address]
            index = int(address[len(WEB) + 1 : -1])
            self.droplets[address] = self._make(index, plan["wanted"][address])
            self.web.stop(old.private)

    def no_changes(self, pins: dict[str, str] | None = None) -> bool:
        """What a plain `terraform plan` of the tfvars file would say: nothing to change."""
        tfvars = self.directory / "terraform.tfvars"
        file_pins = get_tfvar(tfvars, PIN_VAR) if pins is None else pins
        wanted = self.wanted(file_pins if isinstance(file_pins, dict) else {}, [str(tfvars)])
        return all(d.image == wanted[a] for a, d in self.droplets.items())

    def images(self) -> dict[str, str]:
        return {a: d.image for a, d in sorted(self.droplets.items())}

    def state(self) -> dict[str, Any]:
        def instance(index: int | None, d: Droplet, tags: list[str]) -> dict[str, Any]:
            return {
                "index_key": index,
                "attributes": {
                    "id": str(d.id),
                    "image": d.image,
                    "ipv4_address": d.public,
                    "ipv4_address_private": d.private,
                    "name": d.name,
                    "region": "nyc3",
                    "tags": tags,
                    "disk": 25,
                },
            }

        web = sorted(self.droplets.items(), key=lambda item: int(item[0][len(WEB) + 1 : -1]))
        return {
            "version": 4,
            "terraform_version": "1.15.5",
            "serial": 1,
            "lineage": "fake",
            "outputs": {},
            "resources": [
                {
                    "mode": "managed",
                    "type": "digitalocean_droplet",
                    "name": "wp_node",
                    "provider": 'provider["registry.terraform.io/digitalocean/digitalocean"]',
                    "instances": [instance(i, d, ["wp_node"]) for i, (_, d) in enumerate(web)],
                },
                {
                    "mode": "managed",
                    "type": "digitalocean_droplet",
                    "name": "db",
                    "provider": 'provider["registry.terraform.io/digitalocean/digitalocean"]',
                    "instances": [instance(None, self.db, ["db"])],
                },
                {
                    "mode": "managed",
                    "type": "digitalocean_loadbalancer",
                    "name": "wp_lb",
                    "provider": 'provider["registry.terraform.io/digitalocean/digitalocean"]',
                    "instances": [
                        {
                            "index_key": None,
                            "attributes": {
                                "id": "lb-1",
                                "name": "wordpress-lb",
                                "droplet_ids": [str(d.id) for _, d in web],
                                "droplet_tag": "",
                                "http_idle_timeout_seconds": 60,
                                "healthcheck": [
                                    {
                                        "protocol": "http",
                                        "port": 80,
                                        "path": "/",
                                        "check_interval_seconds": 10,
                                        "response_timeout_seconds": 5,
                                        "healthy_threshold": 2,
                                        "unhealthy_threshold": 2,
                                    }
                                ],
                            },
                        }
                    ],
                },
            ],
        }


def failing(stderr: str) -> Callable[[list[str]], None]:
    """A before_apply hook that fails every apply as Terraform does."""

    def fail(_: list[str]) -> None:
        raise TerraformFailed("apply", 1, stderr, [], "terraform")

    return fail


@contextlib.contextmanager
def fake_stack(
    directory: Path, answers: dict[str, Answer], **options: Any
) -> Iterator[FakeTerraform]:
    """A fake stack in `directory` (its *.tf and terraform.tfvars written), torn down after."""
    (directory / "main.tf").write_text(STACK_TF)
    image = options.get("image", "100")
    (directory / "terraform.tfvars").write_text(f'image_slug = "{image}"\n')
    web = Web(answers)
    try:
        yield FakeTerraform(directory, web, **options)
    finally:
        web.close()
