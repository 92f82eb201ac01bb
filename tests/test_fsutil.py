"""write_atomic: whole-file replacement keeping mode, owner and symlinks, leaving no debris."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from scaler.fsutil import write_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_creates_a_new_file_with_the_umask_applied(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    old = os.umask(0o027)
    try:
        write_atomic(target, '{"builds": []}\n')
    finally:
        os.umask(old)
    assert target.read_bytes() == b'{"builds": []}\n'
    assert _mode(target) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_replaces_content_and_keeps_a_private_mode(tmp_path: Path) -> None:
    target = tmp_path / "terraform.tfvars"
    target.write_bytes(b'do_token = "secret"\n')
    target.chmod(0o600)
    before = target.stat()
    write_atomic(target, b'do_token = "other"\n')
    after = target.stat()
    assert target.read_bytes() == b'do_token = "other"\n'
    assert _mode(target) == 0o600
    # A new inode means the file was swapped in by rename, not rewritten in place.
    assert after.st_ino != before.st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["terraform.tfvars"]


def test_explicit_mode_wins_over_the_existing_one(tmp_path: Path) -> None:
    target = tmp_path / "state"
    target.write_text("x")
    target.chmod(0o644)
    write_atomic(target, "y", mode=0o600)
    assert (_mode(target), target.read_text()) == (0o600, "y")


def test_str_is_written_as_utf8_and_bytes_verbatim(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, "é\r\n")
    assert target.read_bytes() == b"\xc3\xa9\r\n"
    write_atomic(target, b"\xff\x00")
    assert target.read_bytes() == b"\xff\x00"


def test_writes_through_a_symlink_and_keeps_the_link(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    real = shared / "prod.tfvars"
    real.write_text('a = "1"\n')
    real.chmod(0o640)
    link = tmp_path / "terraform.tfvars"
    link.symlink_to(real)
    write_atomic(link, 'a = "2"\n')
    assert link.is_symlink()
    assert real.read_text() == 'a = "2"\n'
    assert _mode(real) == 0o640
    assert sorted(p.name for p in shared.iterdir()) == ["prod.tfvars"]


def test_keeps_the_owner_when_root_rewrites_another_users_file(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    target = tmp_path / "terraform.tfvars"
    target.write_text("a = 1\n")
    os.chown(target, 1234, 5678)
    write_atomic(target, "a = 2\n")
    assert (target.stat().st_uid, target.stat().st_gid) == (1234, 5678)


def test_a_failed_replace_leaves_the_target_and_no_temp_file(tmp_path: Path) -> None:
    # A directory in the way makes the final rename fail after the temp file is fully written.
    target = tmp_path / "manifest.json"
    target.mkdir()
    (target / "keep").write_text("k")
    with pytest.raises(OSError):
        write_atomic(target, "{}")
    assert target.is_dir()
    assert (target / "keep").read_text() == "k"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_missing_directory_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "no" / "such" / "file", "x")
    assert list(tmp_path.iterdir()) == []


def test_flushes_the_file_and_its_directory_to_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Durability cannot be observed without pulling the plug; record what reaches fsync instead.
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    target = tmp_path / "terraform.tfvars"
    write_atomic(target, "a = 1\n")
    assert len(synced) == 2
    assert Path(synced[0]).parent == tmp_path and Path(synced[0]).name.startswith(
        ".terraform.tfvars."
    )
    assert synced[1] == str(tmp_path)


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path: Path) -> None:
    import subprocess
    import sys

    target = tmp_path / "terraform.tfvars"
    target.write_text('image_slug = "a"\n')
    # A real writer killed with SIGKILL half-way: it holds its temp file, then dies.
    code = (
        "import os, sys, tempfile, fcntl, time\n"
        "fd, name = tempfile.mkstemp(prefix='.terraform.tfvars.', suffix='.tmp', dir=sys.argv[1])\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'image_sl'); print(name, flush=True)\n"
        "time.sleep(60)\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None
        stale = Path(writer.stdout.readline().strip())
        # While its writer lives, the file is someone's write in progress: kept.
        write_atomic(target, 'image_slug = "b"\n')
        assert stale.exists()
    finally:
        writer.kill()
        writer.wait()
    write_atomic(target, 'image_slug = "c"\n')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["terraform.tfvars"]
    assert target.read_text() == 'image_slug = "c"\n'


def test_a_stale_temp_of_another_file_is_left_alone(tmp_path: Path) -> None:
    other = tmp_path / ".manifest.json.abc.tmp"
    other.write_text("x")
    write_atomic(tmp_path / "terraform.tfvars", "y")
    assert other.exists()
