"""A create call whose answer is lost (connection dropped after the API acted, or a stall
past the client's timeout): the bake finds the resource by its run id and leaves nothing
behind (issue 13, hole 2). Also: a cleanup that cannot DELETE says so."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
from realbake import (  # noqa: F401 - fixtures
    api,
    cloud_fixture,
    example_inventory,
    quick_config,
    real_cloud_fixture,
    resources,
)

from scaler.bake import BakeFailed, bake_image
from scaler.cloud import Cloud, Pacing
from scaler.local.api import LocalCloud


def _client(cloud: LocalCloud, lines: list[str], timeout: float = 30.0) -> Cloud:
    pacing = replace(Pacing.fast(0.05), request_timeout=timeout)
    return Cloud("test", cloud.endpoint, pacing=pacing, on_progress=lines.append)


def _bake(cloud: LocalCloud, tmp_path: Path, lines: list[str], timeout: float = 30.0) -> int:
    result = bake_image(
        quick_config(tmp_path),
        _client(cloud, lines, timeout),
        inventory=example_inventory(),
        on_progress=lines.append,
    )
    return result.id


# The short timeout is every request's in these bakes: long enough that a loaded machine's slow
# answers (a snapshot's copy is made inside the request that sees it complete) still come.
SHORT = 5.0

CREATES = {
    "key, connection dropped": ("/v2/account/keys", 0.0, 30.0, "found key"),
    "droplet, connection dropped": ("/v2/droplets", 0.0, 30.0, "found droplet"),
    "key, stall past the timeout": ("/v2/account/keys", 2 * SHORT, SHORT, "found key"),
    "droplet, stall past the timeout": ("/v2/droplets", 2 * SHORT, SHORT, "found droplet"),
}


@pytest.mark.parametrize("case", CREATES)
def test_a_lost_create_answer_is_looked_up_by_run_id(
    case: str, cloud: LocalCloud, tmp_path: Path
) -> None:
    path, seconds, timeout, said = CREATES[case]
    before = resources(cloud)
    cloud.reset_log()
    cloud.faults.drop("POST", path, seconds)
    lines: list[str] = []
    image = _bake(cloud, tmp_path, lines, timeout)
    try:
        assert any(said in line and "got no answer" in line for line in lines), lines
        after = resources(cloud)
        # the cloud_fixture checks too: no droplet or key outlives the bake
        assert after["droplets"] == before["droplets"] and after["keys"] == before["keys"]
        assert after["snapshots"] == before["snapshots"] | {image}
        # every request made was answered once, none repeated
        posts = [r for r in cloud.requests() if r.method == "POST" and r.path == path]
        assert len(posts) == 1
    finally:
        api(cloud, "DELETE", f"images/{image}")


def test_a_create_the_api_carries_out_late_is_found(cloud: LocalCloud, tmp_path: Path) -> None:
    """The request stalls before the API acts, the client gives up, and only then the droplet
    appears: the lookup looks again (once per request timeout) before deciding."""
    before = resources(cloud)
    cloud.faults.latency("POST", "/v2/droplets", 1.5 * SHORT, times=1)
    lines: list[str] = []
    image = _bake(cloud, tmp_path, lines, timeout=SHORT)
    try:
        assert any("found droplet" in line for line in lines), lines
        assert resources(cloud)["droplets"] == before["droplets"]
    finally:
        api(cloud, "DELETE", f"images/{image}")


def test_run_ids_mark_every_resource(cloud: LocalCloud, tmp_path: Path) -> None:
    """The droplet carries the run's tags and the key its name while the bake runs."""
    seen: dict[str, object] = {}

    def look(line: str) -> None:
        if line.startswith("created build droplet"):
            droplet_id = line.split()[3]
            seen["droplet"] = api(cloud, "GET", f"droplets/{droplet_id}")["droplet"]
            seen["keys"] = api(cloud, "GET", "account/keys")["ssh_keys"]
            folders = [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("scaler-bake-*")]
            seen["folders"] = [
                (p / "run.json").read_text() for p in folders if (p / "run.json").exists()
            ]

    result = bake_image(
        quick_config(tmp_path),
        _client(cloud, []),
        inventory=example_inventory(),
        on_progress=look,
    )
    try:
        droplet = seen["droplet"]
        assert isinstance(droplet, dict)
        tags = droplet["tags"]
        run = next(t for t in tags if t.startswith("scaler-run-"))[len("scaler-run-") :]
        assert "scaler-bake" in tags and re.fullmatch("[0-9a-f]{8}", run)
        assert droplet["name"] == f"scaler-bake-{run}"
        keys = seen["keys"]
        assert isinstance(keys, list)
        assert f"scaler-bake-{run}" in {k["name"] for k in keys}
        folders = seen["folders"]
        assert isinstance(folders, list)
        assert any(f'"run_id": "{run}"' in text for text in folders)
    finally:
        api(cloud, "DELETE", f"images/{result.id}")


def test_failed_cleanup_deletes_are_named_as_such(cloud: LocalCloud, tmp_path: Path) -> None:
    cloud.faults.fail("DELETE", "/v2/droplets/\\d+", status=500, times=200, message="Sad.")
    lines: list[str] = []
    with pytest.raises(BakeFailed) as caught:
        _bake(cloud, tmp_path, lines)
    message = str(caught.value)
    cloud.faults.clear()
    match = re.fullmatch(
        r"snapshot (\d+) \(\S+\) is baked and in the manifest, but removing the build resources "
        r"failed \(droplet (\d+): DELETE /v2/droplets/\d+ failed \(500\): Sad\.\); LEFT BEHIND "
        r"droplet \d+ \(commands above\); removed ssh key \d+",
        message,
    )
    assert match, message
    assert "manifest.json" not in message.split("; ")[0].split("but")[1]
    api(cloud, "DELETE", f"droplets/{match.group(2)}")
    api(cloud, "DELETE", f"images/{match.group(1)}")
