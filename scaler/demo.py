"""`python -m scaler.demo` (`make demo`): the whole job on the built-in local cloud, no account.

It runs the commands a user would run, prints each one, and shows what changed: start the local
cloud (real droplets: each a Linux host of its own), `terraform apply` the stack (3 web droplets
on the base image behind a load balancer, a Galera module with the ha_db_fip floating IP), bake a
WordPress snapshot over SSH in a build droplet, roll it out all at once, bake again and roll that
out in health-checked batches with a canary, show the droplets and the inventory before and
after, and stop the local cloud.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from scaler.terraform import summarize_plan

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(".scaler") / "demo"
# The balancer checks the page only a working WordPress with its database answers with a 2xx
# (roles/ansible-welp/README.md, "Health checks").
HEALTH_PATH = "/scaler-wp-health.php"
# The stack's first plan, saved so that the demo shows its summary and applies exactly it.
PLAN_FILE = "demo.tfplan"


def _scaler() -> list[str]:
    """The scaler command of this interpreter (works from a checkout without installing)."""
    return [sys.executable, "-m", "scaler"]


class Demo:
    """Runs commands in WORK with the local cloud's environment, printing each one."""

    def __init__(self) -> None:
        self.env = {**os.environ}
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"\n== [{time.monotonic() - self.started:5.1f}s] {text}", flush=True)

    def run(self, *args: str, cwd: Path = WORK, show: bool = True) -> str:
        """Run `scaler ARGS` (stdout returned and printed; stderr, the progress, passed through)."""
        print(f"$ scaler {shlex.join(args)}", flush=True)
        done = subprocess.run(
            [*_scaler(), *args], cwd=cwd, env=self.env, stdout=subprocess.PIPE, text=True
        )
        if show and done.stdout:
            print(done.stdout, end="" if done.stdout.endswith("\n") else "\n", flush=True)
        if done.returncode != 0:
            raise SystemExit(f"demo: `scaler {shlex.join(args)}` failed (exit {done.returncode})")
        return done.stdout

    def terraform(self, *args: str, show: bool = True) -> str:
        """`scaler local terraform -C stack -- ARGS` against the demo's local cloud."""
        return self.run("local", "terraform", "-C", "stack", "--state-dir", "cloud", "--", *args,
                        show=show)  # fmt: skip

    def shell(self, *argv: str, env: dict[str, str] | None = None) -> None:
        """Run another tool a user would run (ssh-keygen, ansible-playbook), printing it."""
        print(f"$ {shlex.join(argv)}", flush=True)
        done = subprocess.run(argv, cwd=WORK, env={**self.env, **(env or {})})
        if done.returncode != 0:
            raise SystemExit(f"demo: `{shlex.join(argv)}` failed (exit {done.returncode})")

    def api(self, path: str) -> Any:
        """GET one DigitalOcean API path from the local cloud."""
        request = urllib.request.Request(self.env["DIGITALOCEAN_API_URL"] + path)
        request.add_header("Authorization", "Bearer " + self.env["DIGITALOCEAN_TOKEN"])
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def droplets(self, title: str) -> None:
        """A table of the droplets: name, id, image, public address, and what their own web
        servers answer on `/` and on the health check's path."""
        self.say(title)
        images = {i["id"]: i["name"] for i in self.api("/v2/images?private=true")["images"]}
        port = self.env.get("SCALER_LOCAL_WEB_PORT", "80")
        print(f"{'droplet':<22}{'id':>10}  {'image':<42}{'address':<14}GET /  GET {HEALTH_PATH}")
        for droplet in sorted(self.api("/v2/droplets")["droplets"], key=lambda d: d["name"]):
            image = droplet["image"]
            label = images.get(image["id"]) or image.get("slug") or str(image["id"])
            v4 = droplet["networks"]["v4"]
            address = next(n["ip_address"] for n in v4 if n["type"] == "public")
            shown = f"{label} ({image['id']})"
            root, health = (
                _http_status(address, port, "/"),
                _http_status(address, port, HEALTH_PATH),
            )
            print(
                f"{droplet['name']:<22}{droplet['id']:>10}  {shown:<42}{address:<14}"
                f"{root:<7}{health}"
            )

    def balancer(self, title: str) -> None:
        """What the load balancer answers on its own address, and its own view of each droplet
        (the monitoring endpoint a rollout gates on)."""
        self.say(title)
        for lb in self.api("/v2/load_balancers")["load_balancers"]:
            now = int(time.time())
            query = f"lb_id={lb['id']}&start={now - 60}&end={now}"
            try:
                view = self.api(
                    f"/v2/monitoring/metrics/load_balancer/droplets_health_checks?{query}"
                )
                seen = {
                    r["metric"]["droplet_id"]: "UP" if r["values"][-1][1] == "1" else "DOWN"
                    for r in view["data"]["result"]
                }
            except urllib.error.HTTPError as err:
                seen = {"-": f"no view ({err.code})"}
            port = lb["forwarding_rules"][0]["entry_port"]
            for path in ("/", HEALTH_PATH):
                status, text = _http_get(lb["ip"], str(port), path)
                print(f"GET http://{lb['ip']}{path} through {lb['name']}: {status}{text}")
            states = ", ".join(f"{d} {state}" for d, state in sorted(seen.items()))
            print(f"{lb['name']} sees: {states or 'no droplets'}")


def _http_get(address: str, port: str, path: str) -> tuple[str, str]:
    """The status of GET path, and the page's <title> when it has one."""
    try:
        with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=10) as answer:
            body = answer.read(200_000).decode("utf-8", errors="replace")
            status = str(answer.status)
    except urllib.error.HTTPError as err:
        return str(err.code), ""
    except OSError as err:
        return f"down ({err.__class__.__name__})", ""
    found = re.search(r"<title>(.*?)</title>", body, re.S | re.I)
    return status, f", title {found.group(1).strip()!r}" if found else ""


def _http_status(address: str, port: str, path: str) -> str:
    try:
        # short: behind the firewall no answer comes at all
        with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=1) as answer:
            return str(answer.status)
    except urllib.error.HTTPError as err:
        return str(err.code)
    except OSError as err:
        return f"down ({err.__class__.__name__})"


def main() -> int:
    """Run the demo; the local cloud is stopped on every path."""
    from scaler.local.droplets import unavailable

    why = unavailable()
    if why is not None:
        print(f"demo: {why}; `make demo` as root on Debian installs it", file=sys.stderr)
        return 1
    if WORK.exists():
        subprocess.run(
            [*_scaler(), "local", "down", "--state-dir", str(WORK / "cloud")], check=False
        )
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    demo = Demo()
    # The local cloud boots droplets in seconds, not DigitalOcean's minute; the local provider's
    # waits (the real provider's: first look after 10 s) are scaled to match.
    demo.env.setdefault("SCALER_LOCAL_PROVIDER_POLL", "0.2")
    demo.say("Start the local cloud (a DigitalOcean API on 127.0.0.1, real droplets)")
    from scaler.local.netclaim import reserve_network

    # a free network number: another local cloud on this machine may hold the default one
    network = str(reserve_network())
    exports = demo.run(
        "local", "up", "--state-dir", "cloud", "--port", "0", "--droplets", "real",
        "--network", network,
    )  # fmt: skip
    for line in exports.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            demo.env[key] = shlex.split(value)[0] if value else ""
    try:
        return _story(demo)
    finally:
        demo.run("local", "down", "--state-dir", "cloud")


def _story(demo: Demo) -> int:
    shutil.copytree(ROOT / "terraform", WORK / "stack")
    # The database password reaches the bake and Ansible through the environment only.
    demo.env["WELP_DB_PASSWORD"] = secrets.token_urlsafe(18)
    demo.say("A deploy key: Terraform puts it on every droplet, Ansible logs in with it")
    demo.shell("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "demo", "-f", "deploy_key")
    public = (WORK / "deploy_key.pub").read_text().strip()
    (WORK / "stack" / "terraform.tfvars").write_text(
        "# The demo stack. `scaler rollout` changes image_slug, and only its value.\n"
        'image_slug    = "debian-12-x64"\n'
        "wp_node_count = 3\n"
        f'health_path   = "{HEALTH_PATH}"\n'
        "db_node_count = 1\n"
        f'ssh_public_key = "{public}"\n'
        "# The firewalls are on: HTTP to the web droplets only from the balancer, MySQL to the\n"
        "# database only from the web droplets.\n"
    )
    demo.say("terraform apply: 3 web droplets on the base image, load balancer, Galera + ha_db_fip")
    demo.terraform("init", "-input=false", "-no-color")
    demo.terraform("plan", "-input=false", "-no-color", f"-out={PLAN_FILE}", show=False)
    plan = json.loads(demo.terraform("show", "-json", PLAN_FILE, show=False))
    print("\n".join(summarize_plan(plan).lines()), flush=True)
    applied = demo.terraform("apply", "-input=false", "-no-color", PLAN_FILE, show=False)
    print(next((line for line in applied.splitlines() if "Apply complete" in line), ""))
    demo.droplets("Before: the web droplets run the base image: no web server at all")
    demo.balancer("The load balancer (HAProxy on its own address): every droplet DOWN, so 503")

    demo.say("The Terraform state as Ansible sees it (the groups the bake uses)")
    demo.run("inventory", "--state", "stack/terraform.tfstate", "--graph")

    demo.say("The database: MariaDB on the db_node droplet (db-node.yml, ansible-welp-db)")
    from scaler.bake import wait_for_ssh
    from scaler.provision import SshConnection, wait_for_first_boot

    for droplet in demo.api("/v2/droplets?tag_name=db_node")["droplets"]:
        # its sshd restarts while cloud-init's first boot makes the host keys: wait for that
        v4 = droplet["networks"]["v4"]
        address = next(n["ip_address"] for n in v4 if n["type"] == "public")
        wait_for_ssh(address, 22, 120)
        wait_for_first_boot(SshConnection(address, "root", WORK / "deploy_key"), 300)
    demo.shell(
        "ansible-playbook", "-i", str(ROOT / "inventory"), str(ROOT / "db-node.yml"),
        "-u", "root", "--private-key", "deploy_key",
        "-e", "welp_db_password={{ lookup('env', 'WELP_DB_PASSWORD') }}",
        "-e", "ansible_python_interpreter=/usr/bin/python3",
        env={
            "TF_STATE": str((WORK / "stack" / "terraform.tfstate").resolve()),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        },
    )  # fmt: skip

    # On the local cloud the bake installs WordPress from Debian's `wordpress` package in the
    # build droplet (through the local cloud's mirror) and makes up the database password.
    bake = ["bake", "--state", "stack/terraform.tfstate", "--project", "wordpress"]
    demo.say("Bake a WordPress snapshot (build droplet, ansible-welp, snapshot, manifest.json)")
    demo.run(*bake)
    demo.say("Roll it out all at once (guarded plan, then every droplet must pass health)")
    demo.run(
        "rollout",
        "-C",
        "stack",
        "--from-manifest",
        "manifest.json",
        "--strategy",
        "all",
        "--yes",
        "--health-interval",
        "1",
    )
    demo.droplets("Now every web droplet runs WordPress (this machine reaches none: firewalled)")
    demo.balancer("Through the load balancer, before the rebake's rollout")

    demo.say("A rebake: a new snapshot, rolled out in batches behind the load balancer's check")
    demo.run(*bake)
    demo.run(
        "rollout",
        "-C",
        "stack",
        "--from-manifest",
        "manifest.json",
        "--canary",
        "--batch-size",
        "1",
        "--yes",
        "--health-interval",
        "1",
    )
    demo.droplets("After: new droplets on the new snapshot; the database droplets kept their ids")
    demo.balancer("Through the load balancer, after the rollout: the new droplets in rotation")
    demo.say("A web droplet in the inventory after the rollout (some of its host variables)")
    state = "stack/terraform.tfstate"
    host = json.loads(
        demo.run(
            "inventory", "--state", state, "--host", "digitalocean_droplet.wp_node.0", show=False
        )
    )
    for key in ("ansible_host", "image", "status", "terraform_address", "terraform_tags"):
        print(f"  {key}: {json.dumps(host[key])}")
    demo.say(f"Done. Everything is in {WORK}/ (manifest.json, stack/terraform.tfvars, the state)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
