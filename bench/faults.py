"""Fault matrix on the local cloud: tries, orphans, inconsistent states, tracebacks (target 0/0/0).

`python bench/faults.py [--rounds N] [--only bake|rollout]`.

Bake matrix (a local cloud of real droplets; needs root on Debian): at each create call
(POST /v2/account/keys, POST /v2/droplets) the answer is lost three ways: the connection drops
after the API acted, the answer stalls past the client's timeout, or the API acts only after the
client gave up. Then `scaler bake` is killed with SIGKILL at each phase (key registered, droplet
booting, provisioning, snapshot running) and `scaler cleanup --yes` runs. Orphans: droplets, keys
or snapshots left that no manifest lists. Inconsistent: a manifest naming a snapshot that does
not exist, a failure message of more than one line, a temp folder left.

Rollout matrix (terraform/ with 3 web droplets on directory droplets): `scaler rollout` in batches
of one is killed with SIGKILL at each phase (planning, applying a batch, health check, after the
last batch), then `--resume`, then a second rollout back. Orphans: web droplets outside the
state. Inconsistent: a resume or second rollout that does not end `done`, a deposed object in the
state, a balancer not on exactly the state's droplets, pins left in tfvars, Terraform or the
provider alive after scaler died, a `scaler-provider-*` folder left.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from scaler.bake import BakeFailed, bake_image
from scaler.cloud import Cloud, Pacing
from scaler.config import BakeConfig, apply
from scaler.inventory import build_inventory, list_json
from scaler.local.api import Delays, LocalCloud
from scaler.state import read_state
from scaler.terraform import Terraform, local_provider

ROOT = Path(__file__).resolve().parent.parent
SCALER = Path(sys.executable).parent / "scaler"
PING = [{"name": "Ping", "ansible.builtin.ping": {}}]
SLEEP = [{"name": "Take a while", "ansible.builtin.command": "sleep 60"}]


@dataclass
class Tally:
    """One matrix's figures."""

    name: str
    tries: int = 0
    orphans: int = 0
    inconsistent: int = 0
    tracebacks: int = 0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.name:8} tries {self.tries:3}  orphans {self.orphans}  "
            f"inconsistent {self.inconsistent}  tracebacks {self.tracebacks}"
        )


def api(cloud: LocalCloud, method: str, path: str, body: Any = None) -> Any:
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{cloud.endpoint}{path}", data=data, method=method)
    req.add_header("Authorization", "Bearer bench")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def resources(cloud: LocalCloud) -> dict[str, set[int]]:
    return {
        "droplets": {d["id"] for d in api(cloud, "GET", "droplets?per_page=200")["droplets"]},
        "keys": {k["id"] for k in api(cloud, "GET", "account/keys?per_page=200")["ssh_keys"]},
        "snapshots": {
            i["id"] for i in api(cloud, "GET", "images?private=true&per_page=200")["images"]
        },
    }


def manifest_ids(path: Path) -> set[int]:
    if not path.exists():
        return set()
    data = json.loads(path.read_text())
    return {int(b["artifact_id"].rpartition(":")[2]) for b in data.get("builds", [])}


def sweep(cloud: LocalCloud, before: dict[str, set[int]], keep: set[int]) -> int:
    """Count and remove what a try left beyond `before` (snapshots in `keep` are results)."""
    now = resources(cloud)
    left = 0
    for kind, path in (("droplets", "droplets"), ("keys", "account/keys"), ("snapshots", "images")):
        for ident in now[kind] - before[kind]:
            if kind == "snapshots" and ident in keep:
                api(cloud, "DELETE", f"images/{ident}")
                continue
            left += 1
            api(cloud, "DELETE", f"{path}/{ident}")
    return left


# -- bake matrix ---------------------------------------------------------------------------------


def bake_matrix(rounds: int, tally: Tally) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    play = work / "play.yml"
    play.write_text(json.dumps([{"hosts": "packerbox", "gather_facts": False, "tasks": PING}]))
    inventory = list_json(build_inventory(read_state(ROOT / "examples" / "terraform.tfstate")))
    faults: dict[str, tuple[str, Callable[[LocalCloud, str], None], float]] = {
        "dropped": ("drop", lambda c, p: c.faults.drop("POST", p, 0.0), 30.0),
        # every request's timeout in these bakes: 5 s, so a loaded machine's slow answers come
        "stalled": ("drop", lambda c, p: c.faults.drop("POST", p, 10.0), 5.0),
        "late": ("latency", lambda c, p: c.faults.latency("POST", p, 7.5, times=1), 5.0),
    }
    try:
        with LocalCloud(work / "cloud", delays=Delays.uniform(0.1), droplets="real") as cloud:
            for _ in range(rounds):
                for call in ("/v2/account/keys", "/v2/droplets"):
                    for name, (_, arm, timeout) in faults.items():
                        one_bake(
                            cloud,
                            work,
                            play,
                            inventory,
                            tally,
                            f"{name} {call}",
                            arm,
                            call,
                            timeout,
                        )
                for phase in KILL_PHASES:
                    killed_bake(cloud, work, tally, phase)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def one_bake(
    cloud: LocalCloud,
    work: Path,
    play: Path,
    inventory: dict[str, Any],
    tally: Tally,
    label: str,
    arm: Callable[[LocalCloud, str], None],
    call: str,
    timeout: float,
) -> None:
    tally.tries += 1
    before = resources(cloud)
    manifest = work / "manifest.json"
    manifest.unlink(missing_ok=True)
    config = apply(
        BakeConfig(),
        {"project": "bench", "manifest": str(manifest), "playbook": str(play)},
    )
    client = Cloud(
        "bench", cloud.endpoint, pacing=replace(Pacing.fast(0.1), request_timeout=timeout)
    )
    arm(cloud, call)
    outcome = "ok"
    try:
        bake_image(config, client, inventory=inventory)
    except BakeFailed as err:
        outcome = f"failed: {err}"
        if "\n" in str(err):
            tally.inconsistent += 1
    except Exception:
        tally.tracebacks += 1
        outcome = traceback.format_exc().splitlines()[-1]
    finally:
        cloud.faults.clear()
    listed = manifest_ids(manifest)
    missing = listed - resources(cloud)["snapshots"]
    if missing:
        tally.inconsistent += 1
        outcome += f"; the manifest lists missing snapshots {sorted(missing)}"
    left = sweep(cloud, before, listed)
    tally.orphans += left
    tally.notes.append(f"bake {label}: {outcome[:90]}; orphans {left}")


KILL_PHASES = {
    "key registered": (r"registered temporary SSH key", PING, True),
    "droplet booting": (r"waiting for droplet \d+ to become active", PING, True),
    "provisioning": (r"provisioning droplet \d+", SLEEP, False),
    "snapshot running": (r"waiting for snapshot", PING, False),
}


def killed_bake(cloud: LocalCloud, work: Path, tally: Tally, phase: str) -> None:
    tally.tries += 1
    pattern, tasks, stall = KILL_PHASES[phase]
    before = resources(cloud)
    run = work / f"kill-{len(tally.notes)}"
    temp = run / "t"
    temp.mkdir(parents=True)
    play = run / "play.yml"
    play.write_text(json.dumps([{"hosts": "packerbox", "gather_facts": False, "tasks": tasks}]))
    (run / "scaler.toml").write_text(
        f'[bake]\nproject = "kill"\nplaybook = "{play}"\npoll_min = 0.1\npoll_max = 0.3\n'
    )
    env = {**os.environ, **cloud.env(), "TMPDIR": str(temp)}
    env = {k: v for k, v in env.items() if not k.startswith("TF_")}
    if stall:
        cloud.faults.stall(name="^scaler-bake-")
    saved = cloud.delays
    cloud.delays = replace(saved, snapshot=1.5)
    proc = subprocess.Popen(
        [str(SCALER), "bake", "--state", str(ROOT / "examples" / "terraform.tfstate")],
        cwd=run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not any(re.search(pattern, line) for line in list(lines)):
        if time.monotonic() > deadline or proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    reader.join(timeout=10)
    cloud.delays = saved
    cloud.faults.clear()
    time.sleep(3.0)  # a snapshot the dead bake started finishes meanwhile
    done = subprocess.run(
        [str(SCALER), "cleanup", "--yes", "--temp-dir", str(temp)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if "Traceback" in done.stderr + "".join(lines):
        tally.tracebacks += 1
    kept = sorted(p.name for p in temp.iterdir())
    if done.returncode != 0 or kept:
        tally.inconsistent += 1
    left = sweep(cloud, before, set())
    tally.orphans += left
    tally.notes.append(
        f"bake kill -9 while {phase}: cleanup rc {done.returncode}; orphans {left}"
        + (f"; left in the temp dir: {', '.join(kept)}" if kept else "")
    )


# -- rollout matrix ------------------------------------------------------------------------------


def make_image(cloud: LocalCloud, name: str, index_php: str) -> str:
    spec = {"name": f"build-{name}", "region": "nyc3", "size": "s-1vcpu-1gb"}
    droplet = api(cloud, "POST", "droplets", {**spec, "image": "debian-12-x64"})["droplet"]
    until(lambda: api(cloud, "GET", f"droplets/{droplet['id']}")["droplet"]["status"] == "active")
    web = cloud.machines.web_root(droplet["id"])
    web.mkdir(parents=True, exist_ok=True)
    (web / "index.php").write_text(index_php)
    (web / "wp-login.php").write_text("<?php /* login */ ?>\n")
    action = api(
        cloud, "POST", f"droplets/{droplet['id']}/actions", {"type": "snapshot", "name": name}
    )
    until(
        lambda: (
            api(cloud, "GET", f"actions/{action['action']['id']}")["action"]["status"]
            == "completed"
        )
    )
    snapshots = api(cloud, "GET", f"droplets/{droplet['id']}/snapshots")["snapshots"]
    api(cloud, "DELETE", f"droplets/{droplet['id']}")
    return str(next(s["id"] for s in snapshots if s["name"] == name))


def until(check: Callable[[], Any], timeout: float = 120.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError("timed out")


ROLLOUT_PHASES: dict[str, Callable[[Path, list[str], int, int], bool]] = {
    "planning": lambda d, lines, posts, base: any("planning the rollout" in x for x in lines),
    "applying a batch": lambda d, lines, posts, base: (
        posts > base and bool(record(d).get("creating"))
    ),
    "health check": lambda d, lines, posts, base: any(
        "waiting for 1 droplets to pass" in x for x in lines
    ),
    "after the last batch": lambda d, lines, posts, base: (
        len(record(d).get("done") or []) == 3 and record(d).get("status") == "running"
    ),
}


def record(directory: Path) -> dict[str, Any]:
    path = directory / ".scaler" / "rollout.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}


def using(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            paths = [os.readlink(entry / "cwd")] + [
                os.readlink(fd) for fd in (entry / "fd").iterdir()
            ]
        except OSError:
            continue
        if any(p.startswith(str(folder)) for p in paths):
            found.append(int(entry.name))
    return found


def rollout_matrix(rounds: int, tally: Tally) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    web_port = 18000 + os.getpid() % 1000
    try:
        with LocalCloud(work / "cloud", delays=Delays.uniform(0.1), web_port=web_port,
                        rate_limit_per_minute=100_000) as cloud:  # fmt: skip
            good = make_image(cloud, "wp-1", "<?php /* WordPress */ ?>\n")
            good2 = make_image(cloud, "wp-2", "<?php /* WordPress, newer */ ?>\n")
            for _ in range(rounds):
                for phase in ROLLOUT_PHASES:
                    killed_rollout(cloud, work, tally, phase, good, good2, web_port)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def killed_rollout(
    cloud: LocalCloud, work: Path, tally: Tally, phase: str, good: str, good2: str, web_port: int
) -> None:
    tally.tries += 1
    stack = work / f"stack-{tally.tries}"
    shutil.copytree(ROOT / "terraform", stack)
    (stack / "terraform.tfvars").write_text(f'image_slug = "{good}"\nwp_node_count = 3\n')
    with local_provider(cloud.env()) as env:
        tf = Terraform(stack, env=env)
        tf.init()
        tf.apply()
    temp = work / f"t-{tally.tries}"
    temp.mkdir()
    env = {**os.environ, **cloud.env(), "SCALER_LOCAL_WEB_PORT": str(web_port), "TMPDIR": str(temp)}
    fast = ["--health-interval", "0.05", "--health-grace", "0", "--health-timeout", "30s"]
    base = sum(1 for r in cloud.requests() if (r.method, r.path) == ("POST", "/v2/droplets"))
    proc = subprocess.Popen(
        [str(SCALER), "rollout", "-C", str(stack), "--image", good2, "--batch-size", "1", "--yes",
         "--health-interval", "0.3", "--health-grace", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True)
    reader.start()
    try:
        until(
            lambda: ROLLOUT_PHASES[phase](
                stack,
                list(lines),
                sum(1 for r in cloud.requests() if (r.method, r.path) == ("POST", "/v2/droplets")),
                base,
            ),
            timeout=180,
        )
    except TimeoutError:
        tally.notes.append(f"rollout {phase}: the phase never came")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(timeout=10)
    problems = []
    try:
        until(lambda: not using(stack) and not using(temp), timeout=20)
    except TimeoutError:
        problems.append("Terraform or the provider outlived scaler")
    resumed = subprocess.run(
        [str(SCALER), "rollout", "-C", str(stack), "--resume", "--yes", *fast],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    second = subprocess.run(
        [str(SCALER), "rollout", "-C", str(stack), "--image", good, "--yes", *fast],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    for run, what in ((resumed, "resume"), (second, "second rollout")):
        if "Traceback" in run.stderr:
            tally.tracebacks += 1
        if run.returncode != 0 or not run.stdout.startswith("done:"):
            problems.append(f"{what}: {run.stdout.strip()[:80] or run.stderr.strip()[-80:]}")
    state = json.loads((stack / "terraform.tfstate").read_text())
    droplets = {
        str(i["attributes"]["id"])
        for r in state["resources"]
        if r["type"] == "digitalocean_droplet" and r["name"] == "wp_node"
        for i in r["instances"]
    }
    if any("deposed" in i for r in state["resources"] for i in r["instances"]):
        problems.append("a deposed object in the state")
    tagged = {
        str(d["id"])
        for d in api(cloud, "GET", "droplets?tag_name=wp_node&per_page=200")["droplets"]
    }
    orphans = len(tagged - droplets)
    (lb,) = [r for r in state["resources"] if r["type"] == "digitalocean_loadbalancer"]
    if {str(i) for i in lb["instances"][0]["attributes"]["droplet_ids"]} != droplets:
        problems.append("the balancer is not on the state's droplets")
    if record(stack).get("status") != "done":
        problems.append(f"record {record(stack).get('status')}")
    if "{}" not in (stack / "terraform.tfvars").read_text().split("wp_node_images", 1)[-1][:8]:
        problems.append("pins left in tfvars")
    if list(temp.glob("scaler-provider-*")):
        problems.append("a scaler-provider-* folder left")
    if "Traceback" in "".join(lines):
        tally.tracebacks += 1
    tally.orphans += orphans
    tally.inconsistent += bool(problems)
    tally.notes.append(
        f"rollout kill -9 while {phase}: orphans {orphans}"
        + (f"; {'; '.join(problems)}" if problems else "; resumed and rolled again: done")
    )
    # the next try gets a clean cloud: this stack's droplets go
    with local_provider(cloud.env()) as tf_env:
        Terraform(stack, env=tf_env).destroy()
    for ident in tagged - droplets:
        api(cloud, "DELETE", f"droplets/{ident}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="Repeat each case N times.")
    parser.add_argument("--only", choices=["bake", "rollout"], help="Run one matrix only.")
    parser.add_argument("-v", "--verbose", action="store_true", help="One line per try.")
    args = parser.parse_args()
    tallies = []
    started = time.monotonic()
    if args.only in (None, "rollout"):
        tallies.append(Tally("rollout"))
        rollout_matrix(args.rounds, tallies[-1])
    if args.only in (None, "bake"):
        tallies.append(Tally("bake"))
        bake_matrix(args.rounds, tallies[-1])
    for tally in tallies:
        if args.verbose:
            for note in tally.notes:
                print(f"  {note}")
        print(tally.line())
    total = Tally("total")
    for tally in tallies:
        total.tries += tally.tries
        total.orphans += tally.orphans
        total.inconsistent += tally.inconsistent
        total.tracebacks += tally.tracebacks
    print(total.line() + f"  ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
