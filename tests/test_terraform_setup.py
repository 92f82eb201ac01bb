"""The user's Terraform setup: several tfvars files, the Terraform binary or OpenTofu, TF_DATA_DIR.

Backend configuration for init is shown for real in test_remote_state.py (the pg backend).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_rollout import (  # noqa: F401 (cloud and stack are fixtures)
    FAST,
    Stack,
    cloud,
    others,
    stack,
    terraform_commands,
)

from scaler.cli import main
from scaler.rebake import load_sites
from scaler.terraform import TerraformNotFound, identify_engine
from scaler.tfvars import TfvarsNotFound, WhichTfvars, get_tfvar, tfvars_holding

BIN = Path(sys.executable).parent
NOT_FOUND = "found; pass --tfvars PATH, or create it with `scaler tfvars set NAME VALUE`"


def _rollout(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["rollout", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def stack_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with *.tf files and nothing else: errors here come before any Terraform runs."""
    monkeypatch.delenv("SCALER_TERRAFORM", raising=False)
    monkeypatch.delenv("SCALER_LOCAL_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "stack"
    directory.mkdir()
    (directory / "main.tf").write_text('variable "image_slug" {}\n')
    return directory


def test_the_file_that_sets_image_slug_is_the_one_written(tmp_path: Path) -> None:
    common, prod = tmp_path / "common.tfvars", tmp_path / "prod.tfvars"
    common.write_text("wp_node_count = 3\n")
    prod.write_text('image_slug = "1"\n')
    assert tfvars_holding([common, prod], "image_slug") == prod
    # One file is the one, whether it sets the variable yet or not.
    assert tfvars_holding([common], "image_slug") == common


def test_none_or_several_files_setting_image_slug_is_an_error(tmp_path: Path) -> None:
    common, prod = tmp_path / "common.tfvars", tmp_path / "prod.tfvars"
    common.write_text("wp_node_count = 3\n")
    prod.write_text('region = "nyc3"\n')
    with pytest.raises(WhichTfvars) as none:
        tfvars_holding([common, prod], "image_slug")
    assert str(none.value) == (
        f"none of the tfvars files sets image_slug ({common}, {prod}); add `image_slug = ...` "
        "to the one scaler should write"
    )
    common.write_text('image_slug = "1"\n')
    prod.write_text('image_slug = "2"\n')
    with pytest.raises(WhichTfvars) as both:
        tfvars_holding([common, prod], "image_slug")
    assert str(both.value) == (
        f"image_slug is set in {common} and {prod}; keep it in one of them, the one scaler "
        "should write"
    )
    with pytest.raises(TfvarsNotFound):
        tfvars_holding([common, tmp_path / "gone.tfvars"], "image_slug")


def test_rollout_refuses_a_missing_tfvars_file_and_does_not_create_it(stack_dir: Path) -> None:
    code, out, err = _rollout("-C", "stack", "--image", "1", "--tfvars", "nope.tfvars")
    assert (code, out) == (1, "")
    assert err == f"Error: no {stack_dir.parent / 'nope.tfvars'} {NOT_FOUND}\n"
    assert not (stack_dir.parent / "nope.tfvars").exists()
    # The default, terraform.tfvars in the Terraform directory, is no different.
    code, out, err = _rollout("-C", "stack", "--image", "1")
    assert (code, out) == (1, "")
    assert err == f"Error: no {stack_dir / 'terraform.tfvars'} {NOT_FOUND}\n"
    assert not (stack_dir / "terraform.tfvars").exists()


def test_rollout_old_var_file_name_works_with_a_deprecation_note(stack_dir: Path) -> None:
    code, _, err = _rollout("-C", "stack", "--image", "1", "--var-file", "old.tfvars")
    assert code == 1
    assert err == (
        "Warning: --var-file is deprecated here; use --tfvars FILE (repeatable)\n"
        f"Error: no {stack_dir.parent / 'old.tfvars'} {NOT_FOUND}\n"
    )
    help_text = CliRunner().invoke(main, ["rollout", "--help"]).stdout
    assert "--tfvars FILE" in help_text and "--var-file" not in help_text


def test_rebake_old_var_file_name_works_with_a_deprecation_note(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN", "DIGITALOCEAN_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["rebake", "--check", "-C", "stack", "--var-file", "x"])
    assert result.stderr.splitlines()[0] == (
        "Warning: --var-file is deprecated here; use --tfvars FILE (repeatable)"
    )
    help_text = CliRunner().invoke(main, ["rebake", "--help"]).stdout
    assert "--tfvars FILE" in help_text and "--var-file " not in help_text


def test_rollout_with_two_files_that_both_set_image_slug(stack_dir: Path) -> None:
    (stack_dir / "a.tfvars").write_text('image_slug = "1"\n')
    (stack_dir / "b.tfvars").write_text('image_slug = "2"\n')
    code, _, err = _rollout(
        *("-C", "stack", "--image", "3", "--tfvars", "stack/a.tfvars", "--tfvars", "stack/b.tfvars")
    )
    assert code == 1
    assert err == (
        f"Error: image_slug is set in {stack_dir / 'a.tfvars'} and {stack_dir / 'b.tfvars'}; "
        "keep it in one of them, the one scaler should write\n"
    )


def test_terraform_bin_that_does_not_exist(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (stack_dir / "terraform.tfvars").write_text('image_slug = "1"\n')
    expected = (
        "Error: no Terraform at '/nowhere/tofu' (from --terraform-bin or $SCALER_TERRAFORM); "
        "pass a terraform or tofu binary, or 'embedded' for the engine scaler ships\n"
    )
    code, _, err = _rollout("-C", "stack", "--image", "1", "--terraform-bin", "/nowhere/tofu")
    assert (code, err) == (1, expected)
    monkeypatch.setenv("SCALER_TERRAFORM", "/nowhere/tofu")
    code, _, err = _rollout("-C", "stack", "--image", "1")
    assert (code, err) == (1, expected)


def _fake_tofu(folder: Path) -> Path:
    """OpenTofu is not packaged here: a `tofu` that answers `version` as OpenTofu 1.8 does and
    hands every other command to the real terraform, logging the command line it was given."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed")
    tofu = folder / "tofu"
    tofu.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = version ]; then echo "OpenTofu v1.8.3"; echo "on linux_amd64"; exit 0; fi\n'
        f'echo "$@" >> "{folder}/calls.log"\n'
        f'exec "{terraform}" "$@"\n'
    )
    tofu.chmod(0o755)
    return tofu


def test_opentofu_is_told_apart_by_its_version(stack_dir: Path, tmp_path: Path) -> None:
    tofu = _fake_tofu(tmp_path)
    engine = identify_engine(str(tofu))
    assert (engine.product, engine.version, engine.program) == ("OpenTofu", "1.8.3", "tofu")
    # Its failures are named as its users know it; what it ran is exactly what scaler handed it.
    (stack_dir / "terraform.tfvars").write_text('image_slug = "1"\n')
    (stack_dir / "main.tf").write_text('resource "x" {\n')
    code, _, err = _rollout("-C", "stack", "--image", "2", "--terraform-bin", str(tofu))
    assert code == 1
    assert err.startswith("Error: tofu init failed (exit 1): Error: ")
    assert (tmp_path / "calls.log").read_text() == "init -input=false -no-color\n"


def test_real_terraform_and_the_embedded_engine_are_terraform() -> None:
    terraform = shutil.which("terraform")
    if terraform is not None:
        shown = subprocess.run([terraform, "version"], capture_output=True, text=True).stdout
        engine = identify_engine(terraform)
        assert engine.product == "Terraform"
        assert shown.startswith(f"Terraform v{engine.version}\n")
    launcher = BIN / "scaler-terraform"
    if launcher.is_file():
        embedded = identify_engine(str(launcher))
        assert (embedded.product, embedded.program) == ("Terraform", "terraform")


def test_a_binary_that_is_not_terraform_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "terraform"
    other.write_text("#!/bin/sh\necho hello\n")
    other.chmod(0o755)
    with pytest.raises(TerraformNotFound) as err:
        identify_engine(str(other))
    assert str(err.value) == (
        f"{other} is neither Terraform nor OpenTofu (`version` says 'hello'); "
        "pass a terraform or tofu binary with --terraform-bin"
    )


def test_sites_take_a_list_of_tfvars_files(tmp_path: Path) -> None:
    config = tmp_path / "scaler.toml"
    config.write_text(
        '[[sites]]\nname = "prod"\nterraform_dir = "stack"\n'
        'tfvars = ["common.tfvars", "prod.tfvars"]\n'
        '[[sites]]\nname = "old"\nterraform_dir = "stack"\nvar_file = "old.tfvars"\n'
    )
    prod, old = load_sites(config)
    assert prod.tfvars == (tmp_path / "common.tfvars", tmp_path / "prod.tfvars")
    assert old.tfvars == (tmp_path / "old.tfvars",)


@pytest.mark.slow
def test_rollout_hands_every_tfvars_file_to_terraform_in_order(
    stack: Stack,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The stack's variables split as teams do: shared sizing, and the environment's image.
    common, prod = stack.dir / "common.tfvars", stack.dir / "prod.tfvars"
    common.write_text("wp_node_count = 3\n")
    (stack.dir / "terraform.tfvars").rename(prod)
    common_before = common.read_bytes()
    # TF_DATA_DIR moves init's data: scaler looks there, not in .terraform, before it inits.
    (stack.dir / ".terraform").rename(stack.dir / "tfdata")
    monkeypatch.setenv("TF_DATA_DIR", "tfdata")
    caplog.set_level(logging.DEBUG, logger="python_terraform")
    result = stack.rollout(
        *("--image", stack.good2, "--strategy", "all", "--yes"),
        *("--tfvars", str(common), "--tfvars", str(prod), *FAST),
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        f"done: 3 droplets now run image {stack.good2}, all healthy"
    )
    assert get_tfvar(prod, "image_slug") == stack.good2
    assert common.read_bytes() == common_before
    assert not (stack.dir / ".terraform").exists()
    d = stack.dir
    # "[setpriv --pdeathsig KILL --] ENGINE SUBCOMMAND ...": what follows the engine
    ran = [c.split(" -- ", 1)[-1].split(" ", 1)[1] for c in terraform_commands(caplog)]
    plans = [c for c in ran if c.startswith("plan ")]
    files = f"-lock-timeout=60s -var-file={common} -var-file={prod}"
    targets = " ".join(f"-target=digitalocean_droplet.wp_node[{i}]" for i in range(3))
    # the whole change, then the surge's (scaler.rollout.surge): its new droplets alone, then
    # the whole configuration, which destroys the old ones
    assert plans == [
        f"plan -input=false -out={d}/.scaler/rollout.tfplan {files} -no-color",
        f"plan -input=false -refresh=false -out={d}/.scaler/surge.tfplan {files} {targets} "
        "-no-color",
        f"plan -input=false -refresh=false -out={d}/.scaler/retire.tfplan {files} -no-color",
    ]
    assert not [c for c in ran if c.startswith("init")]
    assert others(stack.ids()) == others(stack.before)
    assert re.search(r"applying", result.stderr)


def test_rollout_help_has_examples_of_the_new_options() -> None:
    out = CliRunner().invoke(main, ["rollout", "--help"]).stdout
    assert "--tfvars common.tfvars --tfvars prod.tfvars" in out
    assert "--backend-config KEY=VALUE|FILE" in out
    assert "--terraform-bin PATH" in out
