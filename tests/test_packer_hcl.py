"""Packer HCL2 templates: the real ones from the field read into their build, or refused by name.

Every key of a builder, provisioner or post-processor (JSON and HCL2) is used or refused."""

from __future__ import annotations

import calendar
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import shared_files

from scaler.cli import main
from scaler.config import (
    AnsibleStep,
    BakeConfig,
    ConfigError,
    FileStep,
    ShellStep,
    load_packer_template,
)
from scaler.hclexpr import HclError, Scope, evaluate, formatdate

AT = calendar.timegm((2025, 1, 2, 15, 4, 5, 0, 0, 0))
REAL = "packer/realworld-hcl2"


def real(shared_data: Path, name: str) -> Path:
    return shared_data / REAL / name


def test_expressions() -> None:
    scope = Scope({"v": "0.30", "n": 2}, Path("/t"), AT, {"ts": '"${timestamp()}"'})
    cases = {
        '${format("dokku-%s-%s", var.v, formatdate("YYYYMMDDhhmm", timestamp()))}': (
            "dokku-0.30-202501021504"
        ),
        '${regex_replace(local.ts, "[- TZ:]", "")}': "20250102150405",
        '"${path.root}/files/x"': "/t/files/x",
        '"echo \\"server_name $SERVER_NAME;\\" $${x}"': 'echo "server_name $SERVER_NAME;" ${x}',
        '${var.n > 1 ? "many" : "one"}': "many",
        '${upper(join("-", ["a", "b"]))}': "A-B",
        '${yamldecode("a: [1, 2]")["a"][1]}': 2,
    }
    for text, want in cases.items():
        assert evaluate(text, scope) == want, text
    assert formatdate("DD MMM YYYY hh:mm ZZZ", "2025-01-02T15:04:05Z") == "02 Jan 2025 15:04 UTC"
    for text, message in (
        ("${[for s in var.v : s]}", "'for' expressions are not supported by scaler"),
        ('"%{ if true }x%{ endif }"', r"template directives \(%\{...\}\) are not supported"),
        ('${vault("a", "b")}', r"the function vault\(\) is not supported by scaler"),
        ("${var.missing}", r"var.missing is not declared \(have: n, v\)"),
        ("${data.x.y}", "the reference 'data' is not supported by scaler"),
    ):
        with pytest.raises(HclError, match=message):
            evaluate(text, scope)


def test_dokku_reads_into_its_build(shared_data: Path) -> None:
    path = real(shared_data, "dokku__dokku__packer.pkr.hcl")
    with pytest.raises(ConfigError) as err:
        load_packer_template(path, BakeConfig(), started=AT)
    assert str(err.value) == (
        f"{path}: variable 'dokku_version' has no value; pass -var dokku_version=VALUE, set it "
        "in a -var-file, or set PKR_VAR_dokku_version"
    )
    c = load_packer_template(
        path, BakeConfig(), variables={"dokku_version": "0.30.1"}, started=AT
    ).config
    assert (c.image, c.region, c.size, c.ssh_username) == (
        "ubuntu-22-04-x64",
        "nyc1",
        "s-1vcpu-512mb-10gb",
        "root",
    )
    assert c.snapshot_name == "dokku-0.30.1-202501021504"
    assert not c.private_networking and c.user_data == ""  # Packer's defaults
    assert c.manifest == Path("digitalocean-manifest.json") and c.build_name == "ubuntu"
    kinds = [type(s).__name__ for s in c.steps]
    assert kinds == ["ShellStep"] + ["FileStep"] * 5 + ["ShellStep"] * 8
    first = c.steps[0]
    assert isinstance(first, ShellStep)
    assert first.inline == (
        "echo '--> Waiting until cloud-init is complete'",
        "/usr/bin/cloud-init status --wait",
    )
    upload = c.steps[1]
    assert isinstance(upload, FileStep) and upload.destination == "/etc/update-motd.d/99-one-click"
    assert upload.sources == (str(path.parent.resolve() / "files/etc/update-motd.d/99-one-click"),)
    tag = c.steps[12]
    assert isinstance(tag, ShellStep) and tag.environment == (("DOKKU_VERSION", "0.30.1"),)
    assert tag.scripts == (path.parent.resolve() / "in_parts/099-application_tag",)


def test_datatracker_env_locals_and_sensitive(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGITALOCEAN_API_TOKEN", "dop_v1_from_env_for_the_default")
    path = real(shared_data, "ietf-tools__datatracker__digitalocean.pkr.hcl")
    loaded = load_packer_template(path, BakeConfig(), started=AT)
    c = loaded.config
    assert c.snapshot_name == "datatracker-snapshot-20250102150405"
    assert (c.region, c.size) == ("tor1", "s-4vcpu-8gb")
    assert loaded.token == "dop_v1_from_env_for_the_default"
    assert loaded.secrets == ("dop_v1_from_env_for_the_default",)
    assert loaded.token not in repr(c)
    assert [type(s).__name__ for s in c.steps] == [
        "ShellStep",
        "FileStep",
        "FileStep",
        "ShellStep",
        "ShellStep",
        "ShellStep",
    ]
    last = c.steps[5]
    assert isinstance(last, ShellStep) and len(last.scripts) == 5
    assert ("DEBIAN_FRONTEND", "noninteractive") in last.environment


def test_supabase_with_its_var_file_and_pkr_var(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = real(shared_data, "digitalocean__supabase-on-do__supabase.pkr.hcl")
    var_file = real(shared_data, "digitalocean__supabase-on-do__supabase.pkrvars.hcl")
    with pytest.raises(ConfigError, match=r"variable 'do_token' has no value"):
        load_packer_template(path, BakeConfig(), started=AT)
    monkeypatch.setenv("PKR_VAR_droplet_size", "s-2vcpu-4gb")
    monkeypatch.setenv("PKR_VAR_region", "lon1")  # the var file beats the environment
    loaded = load_packer_template(path, BakeConfig(), var_file=var_file, started=AT)
    c = loaded.config
    assert (c.region, c.size, c.image) == ("ams3", "s-2vcpu-4gb", "ubuntu-22-10-x64")
    assert c.tags == ("supabase", "digitalocean", "packer")
    assert c.snapshot_name == "supabase-20250102150405"
    assert loaded.token == "x" * 71  # the author's placeholder
    assert isinstance(c.steps[0], FileStep) and isinstance(c.steps[1], ShellStep)
    c = load_packer_template(
        path, BakeConfig(), var_file=var_file, variables={"region": "fra1"}, started=AT
    ).config
    assert c.region == "fra1"  # -var beats the var file


def test_tanzawa_picks_its_digitalocean_source(shared_data: Path) -> None:
    path = real(shared_data, "jamesvandyne__tanzawa__base_server.pkr.hcl")
    c = load_packer_template(path, BakeConfig(), started=AT).config
    assert (c.image, c.region, c.build_name) == ("ubuntu-20-04-x64", "nyc3", "example")
    assert c.snapshot_name == f"packer-{AT}"  # Packer's default name
    upload = c.steps[0]
    assert isinstance(upload, FileStep) and len(upload.sources) == 4
    assert upload.destination == "/tmp/"


def test_ansible_local_is_refused_by_name(shared_data: Path) -> None:
    path = real(shared_data, "maidsafe__sn-testnet-deploy__build.pkr.hcl")
    with pytest.raises(ConfigError) as err:
        load_packer_template(path, BakeConfig(), started=AT)
    assert str(err.value) == (
        f"{path}: provisioner 3 (ansible-local): provisioner 'ansible-local' is not supported "
        "by scaler (use 'ansible', which runs from this machine)"
    )


def test_every_real_template_is_read_or_refused_on_one_line(shared_data: Path) -> None:
    """`scaler bake --dry-run` on each: the build printed, or one `Error:` line."""
    templates = shared_files(REAL, "*.pkr.hcl")
    assert len(templates) == 5
    runner = CliRunner()
    for template in templates:
        args = ["bake", "--packer-template", str(template), "--dry-run"]
        if "dokku" in template.name:
            args += ["-var", "dokku_version=0.30.1"]
        if "supabase" in template.name:
            args += [f"-var-file={template.with_name(template.name[:-8] + '.pkrvars.hcl')}"]
        result = runner.invoke(main, args, env={"DIGITALOCEAN_TOKEN": ""})
        if "maidsafe" in template.name:
            assert result.exit_code == 1
            (line,) = result.output.splitlines()
            assert line.startswith("Error: ") and "'ansible-local'" in line
            continue
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[0] == f"build from {template} (dry run: nothing is created)"
        assert "would run on the build droplet, in order:" in lines
        assert lines[-1].startswith("manifest: append build ")


def test_dry_run_prints_the_build_and_hides_sensitive_values(
    shared_data: Path, tmp_path: Path
) -> None:
    template = real(shared_data, "digitalocean__supabase-on-do__supabase.pkr.hcl")
    var_file = real(shared_data, "digitalocean__supabase-on-do__supabase.pkrvars.hcl")
    result = CliRunner().invoke(
        main,
        ["bake", "--packer-template", str(template), f"-var-file={var_file}", "--dry-run"],
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "x" * 71 not in out
    lines = out.splitlines()
    assert lines[1:4] == [
        "would create:",
        "  ssh key   a temporary ed25519 key (removed afterwards)",
        "  droplet   scaler-bake-<run id>: ubuntu-22-10-x64 in ams3, c-2, tags supabase, "
        "digitalocean, packer, user data none",
    ]
    assert lines[7:9] == [
        f"  1. file: {template.parent.resolve() / 'supabase'} -> /root"
        if (template.parent / "supabase").exists()
        else "  1. file: supabase -> /root",
        "  2. shell: scripts scripts/setup.sh",
    ]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_every_key_is_honoured_or_refused(tmp_path: Path) -> None:
    base = '{"builders": [{"type": "digitalocean", "image": "i", "region": "r", "size": "s"%s}]%s}'
    cases = {
        (', "ssh_agent_auth": true', ""): (
            "the digitalocean builder key 'ssh_agent_auth' is not supported by scaler; remove "
            "it or bake with Packer"
        ),
        (', "communicator": "winrm"', ""): "communicator 'winrm' is not supported by scaler",
        ("", ', "provisioners": [{"type": "shell", "inline": ["x"], "execute_command": "x"}]'): (
            "provisioner 1 (shell) key 'execute_command' is not supported by scaler; remove it "
            "or bake with Packer"
        ),
        ("", ', "provisioners": [{"type": "ansible", "playbook_file": "p", "use_sftp": true}]'): (
            "provisioner 1 (ansible) key 'use_sftp' is not supported by scaler"
        ),
        (
            "",
            ', "provisioners": [{"type": "file", "source": "a", "destination": "b", '
            '"direction": "download"}]',
        ): "direction 'download' is not supported by scaler",
        ("", ', "provisioners": [{"type": "shell"}]'): (
            "provisioner 1 (shell) needs exactly one of inline, script or scripts"
        ),
        ("", ', "post-processors": [{"type": "manifest", "flatten": true}]'): (
            "post-processor 1 (manifest) key 'flatten' is not supported by scaler"
        ),
        ("", ', "post-processors": ["digitalocean-import"]'): (
            "post-processor 1 (digitalocean-import): post-processor 'digitalocean-import' is not "
            "supported by scaler"
        ),
        ("", ', "post-processors": [{"type": "manifest", "custom_data": {"size": "x"}}]'): (
            "custom_data key 'size' is scaler's own (a rebake reads it); rename it"
        ),
        (', "ssh_key_id": 5', ""): "ssh_key_id needs ssh_private_key_file",
    }
    for (builder, rest), message in cases.items():
        template = write(tmp_path, "t.json", base % (builder, rest))
        with pytest.raises(ConfigError) as err:
            load_packer_template(template, BakeConfig(), started=AT)
        assert message in str(err.value), str(err.value)
        assert "\n" not in str(err.value)


def test_every_formerly_dropped_key_changes_the_config(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("not read until the bake")
    template = write(
        tmp_path,
        "t.json",
        json.dumps(
            {
                "builders": [
                    {
                        "type": "digitalocean",
                        "image": "debian-12-x64",
                        "region": "nyc3",
                        "size": "s-1vcpu-1gb",
                        "user_data": "#cloud-config\n",
                        "connect_with_private_ip": True,
                        "ssh_key_id": 41,
                        "ssh_private_key_file": str(key),
                        "snapshot_tags": ["web", "baked"],
                        "droplet_agent": False,
                    }
                ],
                "provisioners": [
                    {"type": "shell", "inline": ["echo before"], "environment_vars": ["A=1"]},
                    {
                        "type": "ansible",
                        "playbook_file": "play.yml",
                        "extra_arguments": ["-e", "x=1"],
                        "galaxy_file": "requirements.yml",
                        "ansible_env_vars": ["ANSIBLE_SSH_ARGS='-o ForwardAgent=yes'"],
                    },
                    {"type": "shell", "script": "after.sh", "valid_exit_codes": [0, 3]},
                    {"type": "file", "content": "hi", "destination": "/etc/motd"},
                ],
                "post-processors": [
                    {
                        "type": "manifest",
                        "output": "out.json",
                        "strip_time": True,
                        "custom_data": {"team": "web"},
                    }
                ],
            }
        ),
    )
    c = load_packer_template(template, BakeConfig(), started=AT).config
    assert c.user_data == "#cloud-config\n" and c.connect_with_private_ip
    assert (c.ssh_key_id, c.ssh_private_key_file) == ("41", key)
    assert c.snapshot_tags == ("web", "baked") and c.droplet_agent is False
    assert c.manifest_strip_time and dict(c.manifest_custom_data) == {"team": "web"}
    before, ansible, after, upload = c.steps
    assert isinstance(before, ShellStep) and before.environment == (("A", "1"),)
    assert isinstance(ansible, AnsibleStep) and ansible.extra_arguments == ("-e", "x=1")
    # the quotes Packer's documentation writes for a shell do not reach ssh
    assert ansible.env == (("ANSIBLE_SSH_ARGS", "-o ForwardAgent=yes"),)
    assert ansible.galaxy_file == Path("requirements.yml") and ansible.playbook is None
    assert c.playbook == Path("play.yml")
    assert isinstance(after, ShellStep) and after.valid_exit_codes == (0, 3)
    assert isinstance(upload, FileStep) and upload.content == "hi"


def test_hcl_refusals_name_the_construct(tmp_path: Path) -> None:
    source = 'source "digitalocean" "x" {\n  image = "i"\n  region = "r"\n  size = "s"\n}\n'
    cases = {
        'data "amazon-ami" "x" {\n  region = "r"\n}\n'
        + source
        + 'build {\n  sources = ["source.digitalocean.x"]\n}\n': "data source 'data' is not "
        "supported by scaler",
        source + 'build {\n  sources = ["source.digitalocean.x"]\n'
        '  provisioner "breakpoint" {\n  }\n}\n': "provisioner 'breakpoint' is not supported",
        source + 'build {\n  sources = ["source.digitalocean.y"]\n}\n': (
            "build uses 'source.digitalocean.y', which is not defined (have: source.digitalocean.x)"
        ),
        source + 'build {\n  sources = ["source.digitalocean.x"]\n'
        '  error-cleanup-provisioner "shell" {\n    inline = ["x"]\n  }\n}\n': (
            "'error-cleanup-provisioner' in the build block is not supported by scaler"
        ),
        source.replace('size = "s"', 'size = "s"\n  temporary_key_pair_type = "rsa"')
        + 'build {\n  sources = ["source.digitalocean.x"]\n}\n': (
            "the digitalocean builder key 'temporary_key_pair_type' is not supported"
        ),
    }
    for text, message in cases.items():
        template = write(tmp_path, "t.pkr.hcl", text)
        with pytest.raises(ConfigError) as err:
            load_packer_template(template, BakeConfig(), started=AT)
        assert message in str(err.value), str(err.value)


def test_hcl_folder_variables_block_chains_and_only(tmp_path: Path) -> None:
    folder = tmp_path / "packer"
    folder.mkdir()
    write(folder, "variables.pkr.hcl", 'variables {\n  name = "site"\n}\n')
    write(folder, "site.auto.pkrvars.hcl", 'name = "shop"\n')
    write(
        folder,
        "build.pkr.hcl",
        'source "digitalocean" "web" {\n  image = "debian-12-x64"\n  region = "nyc3"\n'
        '  size = "s-1vcpu-1gb"\n  snapshot_name = "${var.name}-{{timestamp}}"\n}\n'
        'build {\n  sources = ["source.digitalocean.web"]\n'
        '  provisioner "shell" {\n    only = ["amazon-ebs.x"]\n    inline = ["skipped"]\n  }\n'
        '  provisioner "shell" {\n    except = ["amazon-ebs.x"]\n    inline = ["kept"]\n  }\n'
        '  post-processors {\n    post-processor "manifest" {\n      output = "m.json"\n'
        "      strip_time = true\n    }\n  }\n}\n",
    )
    c = load_packer_template(folder, BakeConfig(), started=AT).config
    assert c.snapshot_name == f"shop-{AT}"  # the legacy {{timestamp}} still works in a source
    (step,) = c.steps
    assert isinstance(step, ShellStep) and step.inline == ("kept",)
    assert c.manifest == Path("m.json") and c.manifest_strip_time


def test_droplet_body_carries_the_builder_switches() -> None:
    from scaler.cloud import DropletSpec

    spec = DropletSpec("b", "nyc3", "s", "debian-12-x64", ssh_keys=(41, "aa:bb"), ipv6=True)
    assert spec.body()["ssh_keys"] == [41, "aa:bb"] and spec.body()["ipv6"] is True
    assert "with_droplet_agent" not in spec.body()
    off = DropletSpec("b", "nyc3", "s", "debian-12-x64", droplet_agent=False)
    assert off.body()["with_droplet_agent"] is False
