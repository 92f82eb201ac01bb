"""`scaler bake`'s option spellings (Packer's -var-file, -var, -on-error), the token's fallback
order (template, environment, doctl's config and contexts), and where scaler.toml is found."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from scaler.cli import main
from scaler.cloud import NoToken, resolve_token, token_from_doctl
from scaler.config import ConfigError, find_config_file
from scaler.errors import ScalerError


@pytest.fixture(name="tutorial")
def tutorial_fixture(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("wp-node.json", "variables.json"):
        shutil.copy(shared_data / "packer" / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def dry_run(*args: str) -> tuple[int, list[str], str]:
    result = CliRunner().invoke(
        main, ["bake", "--packer-template", "wp-node.json", "--dry-run", *args]
    )
    return result.exit_code, result.stdout.splitlines(), result.stderr


def droplet_line(lines: list[str]) -> str:
    (line,) = [line for line in lines if line.startswith("  droplet   ")]
    return line


def test_packers_own_spellings(tutorial: Path) -> None:
    code, lines, err = dry_run("-var-file=variables.json")
    assert code == 0, err
    assert "debian-9-x64 in sfo2, s-1vcpu-1gb" in droplet_line(lines)
    code, lines, err = dry_run(
        "-var-file", "variables.json", "-var", "app_node_image=debian-12-x64"
    )
    assert code == 0 and "debian-12-x64 in sfo2" in droplet_line(lines)
    code, lines, err = dry_run(
        "--packer-var-file",
        "variables.json",
        "-var=app_node_image=ubuntu-24-04-x64",
        "-on-error=abort",
    )
    assert code == 0 and "ubuntu-24-04-x64 in sfo2" in droplet_line(lines)
    assert err == ""
    code, lines, err = dry_run("-on-error=later", "-var-file=variables.json")
    assert code == 2
    assert "Invalid value for '--on-error' / '-on-error': 'later' is not one of 'cleanup', " in err


def test_old_var_file_still_works_with_a_note(tutorial: Path) -> None:
    code, lines, err = dry_run("--var-file", "variables.json")
    assert code == 0
    assert err.splitlines() == [
        "Note: --var-file on `scaler bake` is now --packer-var-file (or Packer's -var-file); "
        "--var-file will go away"
    ]
    assert "debian-9-x64 in sfo2" in droplet_line(lines)


def test_dry_run_never_shows_the_var_files_token(tutorial: Path) -> None:
    code, lines, err = dry_run("-var-file=variables.json")
    assert code == 0
    token = "dop_v1_" + "0" * 64
    assert token not in "\n".join(lines) + err
    assert lines[-4:] == [
        "would run on the build droplet, in order:",
        # Packer reads paths from the working directory; the template's folder lacks it too
        "  1. ansible: packer-build.yml as packerbox in groups all, wp_node; "
        "extra arguments -vvv; env ANSIBLE_HOST_KEY_CHECKING=False "
        "ANSIBLE_SSH_ARGS=-o ForwardAgent=yes -o ControlMaster=auto -o ControlPersist=60s; "
        f"group_vars/host_vars from {tutorial / 'inventory'}",
        "then: shut down, snapshot, remove the droplet and the temporary key",
        "manifest: append build 'digitalocean' to manifest.json",
    ]


def write_doctl(home: Path, text: str) -> Path:
    path = home / ".config" / "doctl" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_token_fallback_order(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert resolve_token("from-template", environ={**env, "DIGITALOCEAN_TOKEN": "t"}) == (
        "from-template"
    )
    for name in ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN", "DIGITALOCEAN_API_TOKEN"):
        assert resolve_token("", environ={**env, name: f"{name}-value"}) == f"{name}-value"
    both = {**env, "DIGITALOCEAN_ACCESS_TOKEN": "access", "DIGITALOCEAN_API_TOKEN": "api"}
    assert resolve_token(None, environ=both) == "access"
    with pytest.raises(NoToken) as err:
        resolve_token(None, environ=env)
    assert str(err.value) == (
        "no DigitalOcean API token; set DIGITALOCEAN_TOKEN (or DIGITALOCEAN_ACCESS_TOKEN), the "
        "template's api_token (do_api_token in the var file), or log in with `doctl auth init`"
    )


def test_doctl_config_and_contexts_come_after_the_environment(tmp_path: Path) -> None:
    path = write_doctl(
        tmp_path,
        "access-token: dop_v1_default\ncontext: work\n"
        "auth-contexts:\n  work: dop_v1_work\n  home: dop_v1_home\n",
    )
    env = {"HOME": str(tmp_path)}
    assert resolve_token(None, environ=env) == "dop_v1_work"  # doctl's current context
    assert resolve_token(None, context="home", environ=env) == "dop_v1_home"
    assert resolve_token(None, context="default", environ=env) == "dop_v1_default"
    assert resolve_token(None, context="home", environ={**env, "DIGITALOCEAN_TOKEN": "e"}) == "e"
    with pytest.raises(ScalerError) as err:
        resolve_token(None, context="lab", environ=env)
    assert str(err.value) == f"no doctl context 'lab' in {path} (have: default, home, work)"
    xdg = tmp_path / "xdg"
    write_doctl(xdg.parent / "xdg-home", "access-token: unused\n")
    (xdg / "doctl").mkdir(parents=True)
    (xdg / "doctl" / "config.yaml").write_text("access-token: dop_v1_xdg\n")
    assert token_from_doctl(None, {**env, "XDG_CONFIG_HOME": str(xdg)}) == "dop_v1_xdg"
    with pytest.raises(ScalerError, match=r"^--context work: no doctl config at "):
        token_from_doctl("work", {"HOME": str(tmp_path / "nobody")})


def test_context_option_reaches_the_token_and_is_never_printed(
    tutorial: Path, tmp_path: Path
) -> None:
    write_doctl(tmp_path, "access-token: dop_v1_default_secret\nauth-contexts:\n  lab: ''\n")
    template = tutorial / "t.json"
    template.write_text(
        '{"builders": [{"type": "digitalocean", "image": "i", "region": "r", "size": "s"}]}'
    )
    result = CliRunner().invoke(
        main,
        ["bake", "--packer-template", str(template), "--context", "lab", "--state", "x.tfstate"],
        env={
            "HOME": str(tmp_path),
            "DIGITALOCEAN_TOKEN": "",
            "DIGITALOCEAN_ACCESS_TOKEN": "",
            "DIGITALOCEAN_API_TOKEN": "",
        },
    )
    assert result.exit_code == 1
    assert result.output == (
        "Error: doctl context 'lab' has no access token; run `doctl auth init --context lab`\n"
    )
    assert "dop_v1_default_secret" not in result.output


def test_scaler_toml_in_a_parent_or_through_scaler_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "scaler.toml").write_text('[bake]\nregion = "fra1"\nsize = "s-2vcpu-2gb"\n')
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_config_file(None, deep, environ={}) == tmp_path / "scaler.toml"
    other = tmp_path / "other.toml"
    other.write_text('[bake]\nregion = "lon1"\n')
    assert find_config_file(None, deep, environ={"SCALER_CONFIG": str(other)}) == other
    with pytest.raises(ConfigError) as err:
        find_config_file(None, deep, environ={"SCALER_CONFIG": str(tmp_path / "nope.toml")})
    assert str(err.value) == (
        f"SCALER_CONFIG names {tmp_path / 'nope.toml'}, which does not exist; fix or unset it"
    )
    monkeypatch.chdir(deep)
    monkeypatch.delenv("SCALER_CONFIG", raising=False)
    result = CliRunner().invoke(main, ["bake", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        f"build from {tmp_path / 'scaler.toml'} (dry run: nothing is created)"
    )
    assert "debian-12-x64 in fra1, s-2vcpu-2gb" in droplet_line(result.stdout.splitlines())
    result = CliRunner().invoke(main, ["bake", "--dry-run"], env={"SCALER_CONFIG": str(other)})
    assert "in lon1, s-1vcpu-1gb" in droplet_line(result.stdout.splitlines())
