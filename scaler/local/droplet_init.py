"""The init (PID 1) of a real local droplet: cloud-init's stages, then every enabled service.

This file is copied into the droplet (on its /run, so no snapshot keeps it) and run by the
droplet's own python3; it uses the standard library only. systemd cannot be the droplet's init on
the machines this was built on (their PID 1 is not systemd and their cgroups are not the unified
v2 hierarchy systemd needs to manage its own tree), so this init does the part of systemd's job a
DigitalOcean droplet's user sees:

- names itself `init` (/proc/1/comm), which Ansible's service-manager detection reads, so
  Ansible's `service` module drives the droplet's SysV init scripts (`service`, `update-rc.d`);
- sets the hostname and a fresh machine-id when the image has none;
- runs cloud-init as systemd would order it: `init --local`, `init`, `modules --mode=config`,
  then the services, then `modules --mode=final` (NoCloud seed written by the local cloud);
- starts every service enabled for runlevel 2 (`/etc/rc2.d/S*`, in order), and every systemd
  unit enabled in multi-user.target that has no init script (its ExecStartPre/ExecStart, run
  as its User, with its Environment, EnvironmentFile and RuntimeDirectory);
- on SIGTERM (the local cloud's shutdown), stops those services in reverse order, then ends
  whatever is left and exits: the kernel ends the droplet's PID namespace with it.

Progress goes to /var/log/scaler-init.log; the current stage to /run/scaler/state.
"""

import ctypes
import json
import os
import pwd
import shlex
import signal
import subprocess
import sys
import time
import uuid

LOG = "/var/log/scaler-init.log"
STATE = "/run/scaler/state"
UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
CLOUD_SCRIPTS = ("cloud-init-local", "cloud-init", "cloud-config", "cloud-final")

_stopping = False
_started_scripts: list[str] = []
_started_units: list[subprocess.Popen[bytes]] = []


def log(message: str) -> None:
    with open(LOG, "a") as out:
        out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n")


def set_state(state: str) -> None:
    with open(STATE + ".new", "w") as out:
        out.write(state + "\n")
    os.replace(STATE + ".new", STATE)
    log(f"state: {state}")


def run(argv: list[str], timeout: float = 600.0) -> int:
    log("run: " + " ".join(shlex.quote(a) for a in argv))
    with open(LOG, "ab") as out:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        except OSError as err:
            log(f"cannot run {argv[0]}: {err}")
            return 127
    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            if code:
                log(f"exit {code}: {argv[0]}")
            return code
        if time.monotonic() > deadline:
            proc.kill()
            log(f"timed out: {argv[0]}")
            return 124
        time.sleep(0.05)


def name_self() -> None:
    libc = ctypes.CDLL(None)
    libc.prctl(15, b"init", 0, 0, 0)  # PR_SET_NAME


def set_hostname() -> None:
    try:
        with open("/run/scaler/spec.json") as spec:
            name = json.load(spec)["hostname"]
    except (OSError, ValueError, KeyError):
        return
    with open("/etc/hostname", "w") as out:
        out.write(name + "\n")
    run(["hostname", name])


def ensure_machine_id() -> None:
    path = "/etc/machine-id"
    try:
        with open(path) as found:
            if found.read().strip():
                return
    except OSError:
        pass
    with open(path, "w") as out:
        out.write(uuid.uuid4().hex + "\n")


def start_scripts() -> None:
    try:
        links = sorted(os.listdir("/etc/rc2.d"))
    except OSError:
        links = []
    for link in links:
        if not link.startswith("S"):
            continue
        name = link[3:]
        if name in CLOUD_SCRIPTS or not os.path.exists(f"/etc/init.d/{name}"):
            continue
        run([f"/etc/init.d/{name}", "start"], timeout=120)
        _started_scripts.append(name)


def _unit(path: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    section = ""
    with open(path) as unit:
        lines = unit.read().replace("\\\n", " ").splitlines()
    for raw in lines:
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section != "Service" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def _command(value: str) -> list[str]:
    return shlex.split(value.lstrip("-@+!:"))


def start_units() -> None:
    wants = "/etc/systemd/system/multi-user.target.wants"
    try:
        names = sorted(os.listdir(wants))
    except OSError:
        return
    for name in names:
        base = name.removesuffix(".service")
        if not name.endswith(".service") or os.path.exists(f"/etc/init.d/{base}"):
            continue
        path = next((f"{d}/{name}" for d in UNIT_DIRS if os.path.exists(f"{d}/{name}")), None)
        if path is None:
            continue
        start_unit(name, _unit(path))


def start_unit(name: str, unit: dict[str, list[str]]) -> None:
    env = dict(os.environ)
    for line in unit.get("Environment", []):
        for item in shlex.split(line):
            key, _, value = item.partition("=")
            env[key] = value
    for line in unit.get("EnvironmentFile", []):
        optional = line.startswith("-")
        try:
            with open(line.lstrip("-")) as values:
                for raw in values:
                    raw = raw.strip()
                    if raw and not raw.startswith("#") and "=" in raw:
                        key, value = raw.split("=", 1)
                        env[key.strip()] = value.strip().strip("\"'")
        except OSError:
            if not optional:
                log(f"{name}: no EnvironmentFile {line}")
    user = (unit.get("User") or ["root"])[-1]
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        log(f"{name}: no user {user}")
        return
    for directory in unit.get("RuntimeDirectory", []):
        for sub in directory.split():
            path = f"/run/{sub}"
            os.makedirs(path, exist_ok=True)
            os.chown(path, account.pw_uid, account.pw_gid)

    def as_user() -> None:
        if account.pw_uid != 0:
            os.setgid(account.pw_gid)
            os.initgroups(user, account.pw_gid)
            os.setuid(account.pw_uid)

    for line in unit.get("ExecStartPre", []):
        run(_command(line), timeout=120)
    kind = (unit.get("Type") or ["simple"])[-1]
    for line in unit.get("ExecStart", [])[-1:]:
        argv = [os.path.expandvars(a) for a in _command(line)]
        log(f"start unit {name}: {' '.join(argv)}")
        with open(LOG, "ab") as out:
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                    preexec_fn=as_user,
                )  # fmt: skip
            except OSError as err:
                log(f"{name}: {err}")
                return
        if kind in ("forking", "oneshot"):
            proc.wait(timeout=120)
        else:
            _started_units.append(proc)


def stop_all(*_: object) -> None:
    global _stopping
    if _stopping:
        return
    _stopping = True
    set_state("stopping")
    for name in reversed(_started_scripts):
        run([f"/etc/init.d/{name}", "stop"], timeout=30)
    for proc in _started_units:
        if proc.poll() is None:
            proc.terminate()
    if _others():
        os.kill(-1, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while _others() and time.monotonic() < deadline:
        reap()
        time.sleep(0.05)
    if _others():
        os.kill(-1, signal.SIGKILL)
    os.sync()
    set_state("off")
    sys.exit(0)


def _others() -> bool:
    return any(p.isdigit() and p != "1" for p in os.listdir("/proc"))


def reap() -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> None:
    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    name_self()
    set_state("booting")
    set_hostname()
    ensure_machine_id()
    for stage in (["init", "--local"], ["init"], ["modules", "--mode=config"]):
        run(["cloud-init", *stage])
    set_state("services")
    start_scripts()
    start_units()
    run(["cloud-init", "modules", "--mode=final"])
    set_state("ready")
    while True:
        reap()
        time.sleep(0.2)


if __name__ == "__main__":
    main()
