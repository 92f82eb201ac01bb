"""scaler/workflow.py: what `scaler bake`, `rollout` and `rebake` share, built once."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from scaler.cloud import NoToken
from scaler.errors import ScalerError
from scaler.local.api import LocalCloud
from scaler.workflow import StopFlag, api_budget, load_bake, open_cloud, stack_inventory

EXAMPLE_STATE = Path(__file__).parent.parent / "examples" / "terraform.tfstate"


def test_a_first_signal_asks_to_stop_and_a_second_interrupts() -> None:
    said: list[str] = []
    flag = StopFlag(said.append)
    before = signal.getsignal(signal.SIGTERM)
    with flag.installed():
        assert signal.getsignal(signal.SIGTERM) == flag.handler
        assert not flag()
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag() and said == ["SIGTERM"]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) == before


def test_the_stop_flag_installs_nothing_outside_the_main_thread() -> None:
    flag = StopFlag()
    seen: list[object] = []

    def run() -> None:
        with flag.installed(signal.SIGINT):
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen and seen[0] != flag.handler


def test_no_bake_settings_is_the_callers_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SCALER_CONFIG", raising=False)
    with pytest.raises(ScalerError, match=r"^pass --config$"):
        load_bake(missing="pass --config")
    # without `missing` the built-in settings serve, and say they were not chosen
    loaded = load_bake()
    assert loaded.path is None and not loaded.explicit_project


def test_the_config_file_names_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCALER_CONFIG", raising=False)
    (tmp_path / "scaler.toml").write_text('[bake]\nproject = "shop"\npoll_min = 0.5\n')
    loaded = load_bake(tmp_path / "scaler.toml")
    assert (loaded.config.project, loaded.explicit_project) == ("shop", True)
    assert loaded.path == tmp_path / "scaler.toml"


def test_open_cloud_wants_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN", "DIGITALOCEAN_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent")
    loaded = load_bake(missing=None)
    with pytest.raises(NoToken):
        open_cloud(loaded.config)
    monkeypatch.setenv("DIGITALOCEAN_API_URL", "http://127.0.0.1:9")
    cloud = open_cloud(loaded.config, "dop_v1_" + "0" * 64)
    assert cloud.endpoint == "http://127.0.0.1:9/v2/"
    assert cloud.pacing.poll_min == loaded.config.poll_min


def test_the_api_budget_says_why_it_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []
    assert api_budget(0, said.append) is None and said == []
    for name in ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN", "DIGITALOCEAN_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert api_budget(250, said.append) is None
    assert said == ["no DIGITALOCEAN_TOKEN here: the API budget is not watched"]


def test_the_api_budget_reads_what_the_token_has_left(local_cloud: LocalCloud) -> None:
    budget = api_budget(250, print, local_cloud.env())
    assert budget is not None
    assert budget.readings == 1 and budget.mark() is not None


def test_the_inventory_comes_from_the_state_and_says_where(tmp_path: Path) -> None:
    state = tmp_path / "terraform.tfstate"
    state.write_text(EXAMPLE_STATE.read_text())
    said: list[str] = []
    inventory = stack_inventory(state_path=str(state), say=said.append)
    assert said == [f"inventory from {state}"]
    assert "wp_node" in inventory and "ha_db_fip" in inventory
