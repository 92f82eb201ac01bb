"""The bake's settings: scaler.toml, the tutorial's Packer files unchanged, overrides."""

from __future__ import annotations

import calendar
from pathlib import Path

import pytest

from scaler.config import (
    BakeConfig,
    ConfigError,
    apply,
    go_time,
    load_config_file,
    load_packer_template,
)

AT = calendar.timegm((2025, 1, 2, 15, 4, 5, 0, 0, 0))


def test_go_layouts() -> None:
    assert go_time("06-01-02-03-04-05", AT) == "25-01-02-03-04-05"  # 03 is Go's 12-hour clock
    assert go_time("2006-01-02T15:04:05Z07:00", AT) == "2025-01-02T15:04:05Z"
    assert go_time("Jan _2 Mon", AT).startswith("Jan _2 Thu")


def test_tutorial_template_and_var_file(shared_data: Path) -> None:
    packer = shared_data / "packer"
    loaded = load_packer_template(
        packer / "wp-node.json",
        BakeConfig(),
        var_file=packer / "variables.json",
        started=AT,
    )
    c = loaded.config
    assert (c.image, c.region, c.size, c.ssh_username) == (
        "debian-9-x64",
        "sfo2",
        "s-1vcpu-1gb",
        "root",
    )
    assert c.private_networking and c.monitoring
    assert c.snapshot_name == "nav-guide_25-01-02-03-04-05" and c.project == "nav-guide"
    assert c.playbook == Path("packer-build.yml") and c.manifest == Path("manifest.json")
    assert c.user_data_file == Path("config/cloud-config.yaml")
    assert (c.host_alias, c.groups) == ("packerbox", ("all", "wp_node"))
    # the var file's token is kept apart from the config, which gets printed in errors
    assert loaded.token is not None and loaded.token.startswith("dop_v1_")
    assert loaded.token not in repr(c)


def test_var_overrides_and_undefined_variables(shared_data: Path, tmp_path: Path) -> None:
    packer = shared_data / "packer"
    loaded = load_packer_template(
        packer / "wp-node.json",
        BakeConfig(),
        var_file=packer / "variables.json",
        variables={"app_node_image": "debian-12-x64"},
    )
    assert loaded.config.image == "debian-12-x64"
    message = (
        r"^builders\[0\]\.image uses user variable 'app_node_image', which is not defined "
        r"\(have: home\); add it to the var file or pass --var NAME=VALUE$"
    )
    with pytest.raises(ConfigError, match=message):
        load_packer_template(packer / "wp-node.json", BakeConfig())
    # api_token's do_api_token left undefined falls back to the environment, as in Packer
    no_token = tmp_path / "vars.json"
    no_token.write_text('{"app_node_image": "debian-12-x64", "project_name": "p"}')
    loaded = load_packer_template(packer / "wp-node.json", BakeConfig(), var_file=no_token)
    assert loaded.token is None and loaded.config.image == "debian-12-x64"


def test_template_timeouts_and_snapshot_regions(tmp_path: Path) -> None:
    template = tmp_path / "t.json"
    template.write_text(
        '{"builders": [{"type": "digitalocean", "image": "debian-12-x64", "region": "nyc3",'
        ' "size": "s-1vcpu-1gb", "snapshot_regions": ["ams3", "lon1"], "ssh_timeout": "1m30s",'
        ' "state_timeout": "5m", "snapshot_name": "img-{{timestamp}}", "tags": ["a", "b"]}]}'
    )
    c = load_packer_template(template, BakeConfig(), started=AT).config
    assert c.snapshot_regions == ("ams3", "lon1") and c.tags == ("a", "b")
    assert (c.timeouts.ssh, c.timeouts.active) == (90.0, 300.0)
    assert c.snapshot_name == f"img-{AT}"
    template.write_text('{"builders": [{"type": "amazon-ebs"}]}')
    with pytest.raises(ConfigError, match=r"has no digitalocean builder \(have: amazon-ebs\)"):
        load_packer_template(template, BakeConfig())


def test_config_file_then_overrides(tmp_path: Path) -> None:
    (tmp_path / "scaler.toml").write_text(
        '[bake]\nproject = "shop"\nregion = "fra1"\nsnapshot_regions = ["ams3"]\n'
        'playbook = "plays/bake.yml"\nmonitoring = true\n'
        '[bake.timeouts]\nactive = 30\n[bake.extra_vars]\nwelp_php_version = "8.2"\n'
    )
    c = load_config_file(tmp_path / "scaler.toml")
    assert (c.project, c.region, c.snapshot_regions, c.monitoring) == (
        "shop",
        "fra1",
        ("ams3",),
        True,
    )
    assert c.playbook == tmp_path / "plays" / "bake.yml" and c.timeouts.active == 30.0
    c = apply(c, {"region": "lon1", "size": None, "extra_vars": {"welp_db_password": "x"}})
    assert c.region == "lon1" and c.size == "s-1vcpu-1gb"
    assert dict(c.extra_vars) == {"welp_php_version": "8.2", "welp_db_password": "x"}


def test_config_errors_name_the_choices(tmp_path: Path) -> None:
    (tmp_path / "scaler.toml").write_text('[bake]\nregoin = "fra1"\n')
    with pytest.raises(ConfigError, match=r"unknown setting 'regoin' \(have: .*region.*\)"):
        load_config_file(tmp_path / "scaler.toml")
    for kind in ("telnet", "local"):
        with pytest.raises(ConfigError, match=f"connection '{kind}' is not supported; the bake"):
            apply(BakeConfig(), {"connection": kind})
    assert apply(BakeConfig(), {"connection": "ssh"}) == BakeConfig()
    with pytest.raises(ConfigError, match=r"no config file .*; create it or leave out --config"):
        load_config_file(tmp_path / "nope.toml")
