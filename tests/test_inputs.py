"""Hostile inputs: every case is a one-line error (exit 1) or valid output, never a traceback
or a hang (issue 13, hole 5). The same cases go through `scaler inventory` and the inventory
script under the system python3, as Ansible runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

SCRIPT = ROOT / "inventory" / "scaler-inventory"
SYSTEM_PYTHON = Path("/usr/bin/python3")
EXAMPLE_STATE = ROOT / "examples" / "terraform.tfstate"


def _v4(**resource: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "mode": "managed",
        "type": "digitalocean_droplet",
        "name": "web",
        "instances": [{"attributes": {"id": "1", "ipv4_address": "203.0.113.1"}}],
    }
    res.update(resource)
    return {"version": 4, "terraform_version": "1.5.0", "resources": [res]}


def _instance(**fields: Any) -> dict[str, Any]:
    return _v4(instances=[{"attributes": {"id": "1", "ipv4_address": "203.0.113.1"}, **fields}])


def _text(text: str | bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / "terraform.tfstate"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return path

    return make


def _doc(document: Any) -> Callable[[Path], Path]:
    return _text(json.dumps(document))


def _fifo(folder: Path) -> Path:
    path = folder / "terraform.tfstate"
    os.mkfifo(path)
    return path


def _directory(folder: Path) -> Path:
    path = folder / "stack"
    path.mkdir()
    return path


CASES: dict[str, Callable[[Path], Path]] = {
    "index_key list": _doc(_instance(index_key=[1])),
    "index_key dict": _doc(_instance(index_key={"a": 1})),
    "index_key float": _doc(_instance(index_key=1.5)),
    "index_key bool": _doc(_instance(index_key=True)),
    "name null": _doc(_v4(name=None)),
    "name number": _doc(_v4(name=7)),
    "type number": _doc(_v4(type=7)),
    "module number": _doc(_v4(module=3)),
    "module list": _doc(_v4(module=["a"])),
    "lone surrogate in name": _text(json.dumps(_v4(name="web")).replace('"web"', '"w\\ud800"')),
    "lone surrogate in an attribute": _text(
        json.dumps(_v4()).replace('"203.0.113.1"', '"\\udfff"')
    ),
    "surrogate pair is fine": _text(
        json.dumps(_v4(name="web")).replace('"web"', '"w\\ud83d\\ude00"')
    ),
    "nested 5000 deep": _text('{"version": 4, "resources": ' + "[" * 5000 + "]" * 5000 + "}"),
    "attributes nested 900 deep": _text(
        json.dumps(_v4()).replace('"id": "1"', '"id": "1", "deep": ' + "[" * 900 + "]" * 900)
    ),
    "9999-digit id": _text(json.dumps(_v4()).replace('"id": "1"', '"id": ' + "9" * 9999)),
    "id 1e400": _text(json.dumps(_v4()).replace('"id": "1"', '"id": 1e400')),
    "id -1e400": _text(json.dumps(_v4()).replace('"id": "1"', '"id": -1e400')),
    "id NaN": _text(json.dumps(_v4()).replace('"id": "1"', '"id": NaN')),
    "id Infinity": _text(json.dumps(_v4()).replace('"id": "1"', '"id": Infinity')),
    "binary": _text(bytes(range(256)) * 4),
    "UTF-8 BOM": _text(b"\xef\xbb\xbf" + json.dumps(_v4()).encode()),
    "resources a string": _doc({"version": 4, "resources": "abc"}),
    "instances a number": _doc(_v4(instances=5)),
    "attributes a list": _doc(_v4(instances=[{"attributes": [1]}])),
    "version 4.0": _doc({"version": 4.0, "resources": []}),
    "legacy module path numbers": _doc(
        {"version": 3, "modules": [{"path": ["root", 5], "resources": {"a.b": {"primary": {}}}}]}
    ),
    "show-json index list": _doc(
        {
            "format_version": "1.0",
            "values": {"root_module": {"resources": [{"type": "t", "name": "n", "index": [1]}]}},
        }
    ),
    "a FIFO": _fifo,
    "a directory": _directory,
}


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _check(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 1), (result.returncode, result.stderr)
    if result.returncode == 0:
        _strict_json(result.stdout)
    else:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        assert result.stdout == ""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "SCALER_"))}
    # no terraform on PATH for the directory case: a missing tool must be an error too
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin"
    return {**env, **extra, "HOME": str(tmp_path)}


@pytest.mark.parametrize("case", CASES)
def test_scaler_inventory_cli(case: str, tmp_path: Path) -> None:
    path = CASES[case](tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "scaler", "inventory", "--list", "--state", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path),
        timeout=60,
    )
    _check(result)


@pytest.mark.skipif(not SYSTEM_PYTHON.is_file(), reason="no /usr/bin/python3")
@pytest.mark.parametrize("case", CASES)
def test_inventory_script_under_the_system_python(case: str, tmp_path: Path) -> None:
    path = CASES[case](tmp_path)
    result = subprocess.run(
        [str(SYSTEM_PYTHON), str(SCRIPT), "--list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path, TF_STATE=str(path)),
        timeout=60,
    )
    _check(result)


def test_a_fifo_is_refused_by_name(tmp_path: Path) -> None:
    path = _fifo(tmp_path)
    result = subprocess.run(
        [str(SYSTEM_PYTHON if SYSTEM_PYTHON.is_file() else sys.executable), str(SCRIPT), "--list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path, TF_STATE=str(path)),
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"Error: Terraform state {path} is a FIFO, not a regular file (from TF_STATE); "
        "pass the terraform.tfstate file\n"
    )


def test_numbers_that_json_cannot_hold_are_named(tmp_path: Path) -> None:
    path = CASES["id 1e400"](tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "scaler", "inventory", "--list", "--state", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path),
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"Error: {path} holds the number 1e400, too large for a JSON value; check the file\n"
    )


FILES: dict[str, Callable[[Path], Path]] = {
    "binary": _text(bytes(range(256)) * 4),
    "JSON 5000 deep": _text("[" * 5000 + "]" * 5000),
    "JSON NaN": _text('{"builds": NaN}'),
    "JSON 1e400": _text('{"builds": [], "x": 1e400}'),
    "TOML 5000 deep": _text("a = " + "[" * 5000 + "]" * 5000),
    "a FIFO": _fifo,
}
COMMANDS = {
    "bake --config": ["bake", "--config", "{}"],
    "bake --packer-template": ["bake", "--packer-template", "{}"],
    "bake --packer-var-file": [
        "bake",
        "--packer-template",
        "template.json",
        "--packer-var-file",
        "{}",
    ],
    "rollout --from-manifest": ["rollout", "--from-manifest", "{}", "--dry-run"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", FILES)
def test_every_file_scaler_reads(command: str, case: str, tmp_path: Path) -> None:
    path = FILES[case](tmp_path)
    template = {"builders": [{"type": "digitalocean", "image": "debian-12-x64"}]}
    (tmp_path / "template.json").write_text(json.dumps(template))
    argv = [a.replace("{}", str(path)) for a in COMMANDS[command]]
    result = subprocess.run(
        [sys.executable, "-m", "scaler", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path, DIGITALOCEAN_TOKEN="x", TF_STATE=str(EXAMPLE_STATE)),
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and str(path) in last, result.stderr
