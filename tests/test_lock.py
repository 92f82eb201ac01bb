"""scaler.lock: one operation per Terraform directory, across processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scaler.lock import LOCK_NAME, LockHeld, hold, holder

HOLD = (
    "import sys, time; from pathlib import Path; from scaler.lock import hold\n"
    "with hold(Path(sys.argv[1]), 'rebake'):\n    print('held', flush=True); time.sleep(60)\n"
)


def start_holder(directory: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"
    return proc


def test_a_live_holder_is_refused_by_name(tmp_path: Path) -> None:
    proc = start_holder(tmp_path)
    try:
        found = holder(tmp_path)
        assert found is not None
        assert (found.pid, found.host, found.operation) == (
            proc.pid,
            socket.gethostname(),
            "rebake",
        )
        with pytest.raises(LockHeld) as err, hold(tmp_path):
            pass
    finally:
        proc.kill()
        proc.wait()
    assert str(err.value) == (
        f"another scaler operation holds {tmp_path / LOCK_NAME}: {found.describe()}; "
        "wait for it to finish, or stop that process (a dead holder's lock is taken over "
        "automatically)"
    )


def test_a_dead_holder_is_taken_over(tmp_path: Path) -> None:
    proc = start_holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The record is still in the file: the holder never got to clear it.
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == proc.pid
    assert holder(tmp_path) is None
    with hold(tmp_path) as acquired:
        assert acquired.stale is not None and acquired.stale.pid == proc.pid
        assert acquired.holder.pid == os.getpid()
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert (tmp_path / LOCK_NAME).read_text() == ""


def test_released_lock_is_clean_and_reusable(tmp_path: Path) -> None:
    with hold(tmp_path) as first:
        assert first.stale is None
        assert holder(tmp_path) is not None
    with hold(tmp_path) as second:
        assert second.stale is None
    assert holder(tmp_path) is None
