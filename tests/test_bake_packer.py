"""Packer templates baked for real on the local cloud: the HCL2 twin of the tutorial's JSON
template, shell and file provisioners around Ansible, the builder and manifest keys that used to
be dropped, and --on-error abort / ask. Real SSH (sshd), real Ansible, real snapshots."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import BakedWordPress
from test_bake import (  # noqa: F401 (the fixtures cloud and bake_cloud are used by name)
    EXAMPLE_STATE,
    ROOT,
    SECRET_TOKEN,
    BakeProcess,
    api,
    bake_cloud_fixture,
    bake_env,
    cloud_fixture,
    resources,
)

from scaler.bake import ed25519_key_pair
from scaler.config import BakeConfig, load_packer_template
from scaler.local.api import LocalCloud


def tutorial_dir(shared_data: Path, tmp_path: Path) -> Path:
    """The tutorial's layout: wp-node.json, variables.json, packer-build.yml, config/."""
    work = tmp_path / "tutorial"
    (work / "config").mkdir(parents=True)
    for name in ("wp-node.json", "variables.json"):
        shutil.copy(shared_data / "packer" / name, work / name)
    shutil.copy(ROOT / "packer-build.yml", work)
    shutil.copy(ROOT / "config" / "cloud-config.yaml", work / "config")
    return work


TWIN = """\
variable "do_api_token" {
  type      = string
  default   = ""
  sensitive = true
}

variable "app_node_image" {
  type = string
}

variable "project_name" {
  type = string
}

variable "home" {
  type    = string
  default = env("HOME")
}

source "digitalocean" "wp-node" {
  api_token          = var.do_api_token
  image              = var.app_node_image
  region             = "sfo2"
  size               = "s-1vcpu-1gb"
  private_networking = true
  monitoring         = true
  user_data_file     = "./config/cloud-config.yaml"
  snapshot_name      = "${var.project_name}_${formatdate("YY-MM-DD-HH-mm-ss", timestamp())}"
  communicator       = "ssh"
  ssh_username       = "root"
}

build {
  sources = ["source.digitalocean.wp-node"]

  provisioner "ansible" {
    playbook_file       = "packer-build.yml"
    ansible_env_vars    = [
      "ANSIBLE_HOST_KEY_CHECKING=False",
      "ANSIBLE_SSH_ARGS='-o ForwardAgent=yes -o ControlMaster=auto -o ControlPersist=60s'",
    ]
    extra_arguments     = ["-vvv"]
    groups              = ["all", "wp_node"]
    host_alias          = "packerbox"
    inventory_directory = "${path.root}/inventory"
    user                = "root"
  }

  post-processor "manifest" {
    output     = "manifest.json"
    strip_path = true
  }
}
"""


def write_twin(work: Path) -> None:
    """wp-node.pkr.hcl and wp-node.pkrvars.hcl beside the tutorial's JSON files."""
    (work / "wp-node.pkr.hcl").write_text(TWIN)
    values = json.loads((work / "variables.json").read_text())
    (work / "wp-node.pkrvars.hcl").write_text(
        "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    )


# What differs on every boot of any droplet, not by what was baked: its name, machine id,
# logs, caches and systemd's and cloud-init's per-instance state.
_PER_BOOT = (
    "etc/hostname",
    "etc/machine-id",
    "var/log/",
    "var/cache/",
    "var/lib/systemd/",
    "var/lib/cloud/",
    "var/lib/dhcp/",
    "var/tmp/",
    "tmp/",
    "run/",
    "root/.ansible/",
)


def tree(root: Path) -> dict[str, bytes]:
    """Every file of a snapshot's layer, without what differs on every boot (_PER_BOOT) and
    every bake: the random database password and salts, the temporary key."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(_PER_BOOT) or not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        if path.name in ("wp-config.php", "wp-salts.php"):
            data = re.sub(rb"define\('(DB_PASSWORD|\w+_(KEY|SALT))',\s*'[^']*'\);", b"", data)
        data = re.sub(rb"ssh-ed25519 [A-Za-z0-9+/=]+", b"<the bake's temporary key>", data)
        out[rel] = data
    return out


def test_twin_reads_into_the_same_settings(shared_data: Path, tmp_path: Path) -> None:
    work = tutorial_dir(shared_data, tmp_path)
    write_twin(work)
    at = 1_735_830_245.0
    json_loaded = load_packer_template(
        work / "wp-node.json", BakeConfig(), var_file=work / "variables.json", started=at
    )
    hcl_loaded = load_packer_template(
        work / "wp-node.pkr.hcl", BakeConfig(), var_file=work / "wp-node.pkrvars.hcl", started=at
    )
    assert json_loaded.token == hcl_loaded.token
    assert hcl_loaded.config.build_name == "wp-node"
    assert replace(hcl_loaded.config, build_name="digitalocean") == json_loaded.config


@pytest.mark.slow
def test_hcl2_twin_bakes_the_same_image(baked_wordpress: BakedWordPress, tmp_path: Path) -> None:
    """The session's `--packer-template wp-node.json` bake and its HCL2 twin's: the same
    snapshot contents and settings, the same manifest shape."""
    cloud = baked_wordpress.cloud
    work = tmp_path / "tutorial"
    shutil.copytree(baked_wordpress.work, work)
    (work / "manifest.json").unlink()
    write_twin(work)
    before = resources(cloud)
    args = ["--packer-template", "wp-node.pkr.hcl", "-var-file=wp-node.pkrvars.hcl"]
    args += ["--state", str(EXAMPLE_STATE), "--json"]
    code, out, err = BakeProcess(args, work, bake_env(cloud, tmp_path)).finish(timeout=900)
    assert code == 0, err
    assert SECRET_TOKEN not in out + err and "dop_v1_0000" not in out + err
    one, two = baked_wordpress.result, json.loads(out)
    assert re.fullmatch(r"nav-guide_\d\d-\d\d-\d\d-\d\d-\d\d-\d\d", two["name"])
    assert one["regions"] == two["regions"] == ["sfo2"]
    assert one["custom_data"]["provisioning_sha256"] == two["custom_data"]["provisioning_sha256"]
    images = [api(cloud, "GET", f"images/{r['id']}")["image"] for r in (one, two)]
    assert images[0]["description"] == images[1]["description"]
    assert images[0]["regions"] == images[1]["regions"]
    first, second = (tree(cloud.machines.image_root(r["id"])) for r in (one, two))
    assert sorted(first) == sorted(second)
    # contents: everything the role writes (cloud-init rewrites etc/hosts and the like per droplet)
    baked = ("var/www/", "etc/nginx/", "etc/php/", "etc/scaler/")
    differ = [p for p in first if p.startswith(baked) and first[p] != second[p]]
    assert differ == []
    assert "var/www/wordpress/wp-config.php" in first
    (a,) = json.loads((baked_wordpress.work / "manifest.json").read_text())["builds"][-1:]
    (b,) = json.loads((work / "manifest.json").read_text())["builds"]
    assert (
        set(a)
        == set(b)
        == {
            "name",
            "builder_type",
            "build_time",
            "files",
            "artifact_id",
            "packer_run_uuid",
            "custom_data",
        }
    )
    assert (a["name"], b["name"]) == ("digitalocean", "wp-node")
    assert set(a["custom_data"]) == set(b["custom_data"])
    after = resources(cloud)
    assert after["droplets"] == before["droplets"] and after["keys"] == before["keys"]
    # the snapshot stays in the session's cloud, which goes with it: deleting a WordPress
    # layer at once held the local cloud up until the next test's calls timed out


# a cloud-config that leaves a file behind, written as an HCL string
USER_DATA = (
    "#cloud-config\\nwrite_files:\\n  - path: /etc/from-user-data\\n"
    "    content: inline user data\\n"
)


def steps_template(folder: Path, marker: str, *, fail_after: bool = False) -> Path:
    """A template with shell before and after a small Ansible play, a file upload, and the
    builder and manifest keys that used to be dropped. Paths the steps write sit under the
    droplet's root ($SCALER_DROPLET_ROOT on today's local droplets, / inside a real one)."""
    play = folder / "play.yml"
    play.write_text(
        json.dumps(
            [
                {
                    "hosts": "packerbox",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "ansible.builtin.shell": 'echo "ansible $FROM_ENV_VARS" >> '
                            '"${SCALER_DROPLET_ROOT:-}/etc/order"'
                        }
                    ],
                }
            ]
        )
    )
    (folder / "after.sh").write_text(
        '#!/bin/sh\nset -e\necho "after $STEP" >> "${SCALER_DROPLET_ROOT:-}/etc/order"\n'
        f'cp "/tmp/{marker}" "${{SCALER_DROPLET_ROOT:-}}/etc/uploaded"\n'
        + ("exit 7\n" if fail_after else "")
    )
    (folder / "upload.txt").write_text("uploaded by the file provisioner\n")
    template = folder / "steps.pkr.hcl"
    template.write_text(
        f"""\
source "digitalocean" "steps" {{
  image                   = "debian-12-x64"
  region                  = "nyc3"
  size                    = "s-1vcpu-1gb"
  private_networking      = true
  connect_with_private_ip = true
  user_data               = "{USER_DATA}"
  snapshot_name           = "steps-{marker}"
  snapshot_tags           = ["web", "baked-{marker}"]
  droplet_agent           = false
  ssh_username            = "root"
}}

build {{
  sources = ["source.digitalocean.steps"]

  provisioner "shell" {{
    environment_vars = ["WHO=shell-before"]
    inline           = ["mkdir -p \\"$${{SCALER_DROPLET_ROOT:-}}/etc\\"",
                        "echo \\"before $WHO\\" > \\"$${{SCALER_DROPLET_ROOT:-}}/etc/order\\""]
  }}

  provisioner "ansible" {{
    playbook_file    = "{folder / "play.yml"}"
    ansible_env_vars = ["FROM_ENV_VARS=not-a-remote-var"]
    extra_arguments  = ["--extra-vars", "unused=1"]
  }}

  provisioner "file" {{
    source      = "{folder / "upload.txt"}"
    destination = "/tmp/{marker}"
  }}

  provisioner "shell" {{
    environment_vars = ["STEP=4"]
    script           = "{folder / "after.sh"}"
  }}

  post-processor "manifest" {{
    output      = "{folder / "manifest.json"}"
    strip_time  = true
    custom_data = {{ team = "web", marker = "{marker}" }}
  }}
}}
"""
    )
    return template


@pytest.mark.slow
def test_shell_and_file_steps_around_ansible_and_the_builder_keys(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    marker = f"scaler-test-{uuid.uuid4().hex[:8]}"
    template = steps_template(tmp_path, marker)
    try:
        code, out, err = BakeProcess(
            [
                "--packer-template",
                str(template),
                "--state",
                str(EXAMPLE_STATE),
                "--json",
            ],
            tmp_path,
            bake_env(cloud, tmp_path),
        ).finish(timeout=300)
    finally:
        Path("/tmp", marker).unlink(missing_ok=True)
    assert code == 0, err
    result = json.loads(out)
    root = cloud.machines.image_root(result["id"])
    # in template order: shell, ansible (whose env var is not a remote one), file, shell
    assert (root / "etc/order").read_text() == "before shell-before\nansible \nafter 4\n"
    assert (root / "etc/uploaded").read_text() == "uploaded by the file provisioner\n"
    # the builder's inline user_data reached cloud-init in the droplet
    assert (root / "etc/from-user-data").read_text() == "inline user data"
    assert re.search(r"waiting for SSH on 127\.\d+\.2\.\d+:\d+$", err, re.M)  # private address
    assert re.search(r"running provisioner 1/4 \(shell\) on droplet \d+$", err, re.M)
    assert re.search(r"running provisioner 4/4 \(shell\) on droplet \d+$", err, re.M)
    image = api(cloud, "GET", f"images/{result['id']}")["image"]
    assert image["name"] == f"steps-{marker}"
    assert sorted(image["tags"]) == sorted(["web", f"baked-{marker}"])
    (build,) = json.loads((tmp_path / "manifest.json").read_text())["builds"]
    assert "build_time" not in build  # strip_time
    assert build["name"] == "steps"
    assert build["custom_data"]["team"] == "web" and build["custom_data"]["marker"] == marker
    assert re.fullmatch(r"[0-9a-f]{64}", build["custom_data"]["provisioning_sha256"])


@pytest.mark.slow
def test_ssh_key_id_uses_the_accounts_key_and_keeps_it(cloud: LocalCloud, tmp_path: Path) -> None:
    private, public = ed25519_key_pair(tmp_path)
    key = api(cloud, "POST", "account/keys", {"name": "mine", "public_key": public})["ssh_key"]
    (tmp_path / "play.yml").write_text(
        '[{"hosts": "packerbox", "gather_facts": false, "tasks": [{"ansible.builtin.ping": {}}]}]'
    )
    template = tmp_path / "key.json"
    template.write_text(
        json.dumps(
            {
                "builders": [
                    {
                        "type": "digitalocean",
                        "image": "debian-12-x64",
                        "region": "nyc3",
                        "size": "s-1vcpu-1gb",
                        "ssh_username": "root",
                        "ssh_key_id": key["id"],
                        "ssh_private_key_file": str(private),
                    }
                ],
                "provisioners": [{"type": "ansible", "playbook_file": "play.yml"}],
                "post-processors": [{"type": "manifest", "output": "manifest.json"}],
            }
        )
    )
    cloud.reset_log()
    code, out, err = BakeProcess(
        ["--packer-template", str(template), "--state", str(EXAMPLE_STATE)],
        tmp_path,
        bake_env(cloud, tmp_path),
    ).finish(timeout=300)
    assert code == 0, err
    assert f"using SSH key {key['id']} (ssh_key_id) with {private}" in err
    assert not [r for r in cloud.requests() if r.template.startswith("POST /v2/account/keys")]
    assert key["id"] in resources(cloud)["keys"]
    api(cloud, "DELETE", f"images/{out.strip()}")
    api(cloud, "DELETE", f"account/keys/{key['id']}")


@pytest.mark.slow
def test_on_error_abort_keeps_droplet_and_key_and_says_how_to_reach_them(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    marker = f"scaler-test-{uuid.uuid4().hex[:8]}"
    template = steps_template(tmp_path, marker, fail_after=True)
    env = bake_env(cloud, tmp_path)
    before = resources(cloud)
    try:
        code, out, err = BakeProcess(
            [
                "--packer-template",
                str(template),
                "--state",
                str(EXAMPLE_STATE),
                "-on-error=abort",
            ],
            tmp_path,
            env,
        ).finish(timeout=300)
    finally:
        Path("/tmp", marker).unlink(missing_ok=True)
    assert code == 1 and out == ""
    left = {kind: ids - before[kind] for kind, ids in resources(cloud).items()}
    (droplet,) = left["droplets"]
    (key,) = left["keys"]
    last = err.splitlines()[-1]
    assert re.fullmatch(
        rf"Error: bake failed while running provisioner 4/4 \(shell\) on droplet {droplet}: "
        r"provisioning failed at task 'shell 4: step4-0-after\.sh' on packerbox: .*; kept "
        rf"droplet {droplet}, ssh key {key} for debugging \(--on-error abort; see above\)",
        last,
    ), last
    (ssh_line,) = [line for line in err.splitlines() if "  ssh in: " in line]
    command = ssh_line.split("  ssh in: ", 1)[1]
    key_file = Path(command.split()[2])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # the printed command logs in (BatchMode: a key, never a password prompt)
    reached = subprocess.run(
        [*command.split()[:1], "-o", "BatchMode=yes", *command.split()[1:], "cat", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert reached.returncode == 0, reached.stderr
    # and the printed removal commands remove everything
    removal = err.split("  remove them:\n", 1)[1].splitlines()
    commands = [
        line.split("] ", 1)[-1].strip() for line in removal if "curl " in line or "rm -r" in line
    ]
    assert any(f"droplets/{droplet}" in c for c in commands)
    for command_line in commands:
        subprocess.run(command_line, shell=True, env=env, check=True, timeout=30)
    after = resources(cloud)
    assert after["droplets"] == before["droplets"] and after["keys"] == before["keys"]
    assert not key_file.exists()
    assert SECRET_TOKEN not in err


@pytest.mark.slow
@pytest.mark.parametrize("answer", ["abort", "retry"])
def test_on_error_ask(cloud: LocalCloud, tmp_path: Path, answer: str) -> None:
    """ask on the terminal: retry runs the failed step again (it passes the second time, as
    the droplet remembers the first try), abort keeps everything."""
    once = "if [ -e /root/tried ]; then exit 0; fi; touch /root/tried; exit 1"
    template = tmp_path / "ask.json"
    template.write_text(
        json.dumps(
            {
                "builders": [
                    {
                        "type": "digitalocean",
                        "image": "debian-12-x64",
                        "region": "nyc3",
                        "size": "s-1vcpu-1gb",
                    }
                ],
                "provisioners": [{"type": "shell", "inline": [once]}],
                "post-processors": [{"type": "manifest", "output": "manifest.json"}],
            }
        )
    )
    before = resources(cloud)
    bake = AskedBake(
        [
            "--packer-template",
            str(template),
            "--state",
            str(EXAMPLE_STATE),
            "--on-error",
            "ask",
        ],
        tmp_path,
        bake_env(cloud, tmp_path),
    )
    bake.wait_for(r"^bake failed while running provisioner 1/1 \(shell\) on droplet \d+: ", 120)
    bake.answer(answer + "\n")
    code, out, err = bake.finish(timeout=300)
    left = {kind: ids - before[kind] for kind, ids in resources(cloud).items()}
    if answer == "retry":
        assert code == 0, err
        assert "retrying provisioner 1" in err
        assert left["droplets"] == set() and left["keys"] == set()
        api(cloud, "DELETE", f"images/{out.strip()}")
    else:
        assert code == 1
        assert "for debugging (--on-error abort; see above)" in err.splitlines()[-1]
        assert len(left["droplets"]) == 1 and len(left["keys"]) == 1
        for droplet in left["droplets"]:
            api(cloud, "DELETE", f"droplets/{droplet}")
        for key in left["keys"]:
            api(cloud, "DELETE", f"account/keys/{key}")
        (ssh_line,) = [line for line in err.splitlines() if "  ssh in: " in line]
        key_file = Path(ssh_line.split("  ssh in: ", 1)[1].split()[2])
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        shutil.rmtree(key_file.parent)


class AskedBake(BakeProcess):
    """`scaler bake` with a pipe for its terminal questions."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        super().__init__(args, cwd, env, stdin=True)

    def answer(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()
