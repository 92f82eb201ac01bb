"""Network numbers come from an allocator: one lock file per number, held for a cloud's life."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaler.local import netclaim
from scaler.local.netclaim import AUTO_RANGE, NetworkInUse, claim_network


@pytest.fixture(autouse=True)
def _own_lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALER_LOCAL_LOCK_DIR", str(tmp_path / "nets"))


def test_two_automatic_claims_get_different_numbers_and_skip_42() -> None:
    with claim_network() as first, claim_network() as second:
        assert first.number != second.number
        assert {first.number, second.number} <= set(AUTO_RANGE)
        assert 42 not in AUTO_RANGE


def test_a_held_number_is_refused_by_name_and_holder() -> None:
    with claim_network(42), pytest.raises(NetworkInUse) as err:
        claim_network(42)
    assert str(err.value) == (
        f"network 42 is in use by another local cloud (pid {os.getpid()}); "
        "pick another with --network, or leave it out to get a free one"
    )
    claim_network(42).release()  # free again once released


def test_a_released_number_cools_down_but_its_owner_can_take_it_back() -> None:
    with claim_network() as claim:
        number = claim.number
    with claim_network() as other:
        assert other.number != number  # automatic claims pass over the one just used
    with claim_network(prefer=number) as again:
        assert again.number == number  # the state folder's last number comes back


def test_a_killed_holder_frees_its_number(tmp_path: Path) -> None:
    code = (
        "from scaler.local.netclaim import claim_network\n"
        "c = claim_network(77)\nprint('held', flush=True)\nimport time; time.sleep(60)\n"
    )
    env = {**os.environ, "SCALER_LOCAL_LOCK_DIR": str(tmp_path / "nets")}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"held\n"
        with pytest.raises(NetworkInUse, match=f"pid {proc.pid}"):
            claim_network(77)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    claim_network(77).release()


def test_every_number_cooling_down_still_yields_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netclaim, "AUTO_RANGE", range(50, 53))
    for n in (51, 50, 52):
        claim_network(n).release()
        time.sleep(0.01)
    with claim_network() as claim:
        assert claim.number == 51
    with claim_network(50), claim_network(51), claim_network(52), pytest.raises(NetworkInUse):
        claim_network()
