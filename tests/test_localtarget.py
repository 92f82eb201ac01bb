"""LocalTarget: what the core knows of the local cloud, detected once from its endpoint."""

from __future__ import annotations

from pathlib import Path

from scaler.health import port_map_from_env
from scaler.local.api import LocalCloud
from scaler.localtarget import LocalTarget, detect_local_target, web_port_setting


def target(web_port: int) -> LocalTarget:
    return LocalTarget("http://127.0.0.1:1", "real", "", 22, None, (), web_port=web_port)


def test_port_map_dials_the_web_port_for_80() -> None:
    assert target(8080).port_map() == {80: 8080}
    assert target(80).port_map() == {}  # root serves port 80 itself


def test_web_port_setting_is_what_local_up_exports() -> None:
    assert web_port_setting({"SCALER_LOCAL_WEB_PORT": "18080"}) == "18080"
    assert web_port_setting({"SCALER_LOCAL_WEB_PORT": ""}) is None
    assert web_port_setting({}) is None
    # the health probe's port map falls back to it
    assert port_map_from_env({"SCALER_LOCAL_WEB_PORT": "18080"}) == {80: 18080}


def test_detected_from_a_running_local_cloud(tmp_path: Path) -> None:
    with LocalCloud(tmp_path) as cloud:
        found = detect_local_target(cloud.endpoint)
        assert found is not None
        assert (found.droplet_kind, found.state_dir) == ("directory", tmp_path.resolve())
        assert found.web_port == cloud.machines.web_port()
        assert found.ssh_port == 22  # directory droplets serve no SSH: the default stays
    # a cloud that is gone (or any other) is not a local target
    assert detect_local_target(cloud.endpoint) is None


def test_wordpress_comes_from_debian_unless_a_source_is_named() -> None:
    local = target(80)
    assert local.wordpress_source({}) == {"welp_wordpress_package": "wordpress"}
    assert local.wordpress_source({"welp_wordpress_archive": ""}) == {  # empty names nothing
        "welp_wordpress_package": "wordpress"
    }
    assert local.wordpress_source({"welp_wordpress_src_dir": "/srv/wp"}) == {}
    assert local.wordpress_source({"welp_wordpress_package": "wordpress-6"}) == {}


def test_stand_in_passwords_differ() -> None:
    local = target(80)
    first, second = local.stand_in_password(), local.stand_in_password()
    assert first != second and len(first) >= 32
