"""Snapshot hygiene: pure prune planning, and list/prune against the local cloud."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_snapshots, module_cloud

from scaler.cli import main
from scaler.cloud import Cloud
from scaler.errors import ScalerError
from scaler.local.api import LocalCloud
from scaler.snapshots import (
    Snapshot,
    format_age,
    in_use_from,
    parse_age,
    plan_prune,
    project_snapshots,
)
from scaler.state import read_state

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def snap(ident: int, days_old: float, name: str | None = None) -> Snapshot:
    return Snapshot(
        ident,
        name or f"wordpress_{ident}",
        NOW - timedelta(days=days_old),
        1.5,
        ("nyc3",),
    )


@pytest.fixture(scope="module")
def own_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """This module's local cloud (its own network: no droplet address shared with others)."""
    with module_cloud(tmp_path_factory, "snapshots-cloud") as cloud:
        yield cloud


@pytest.fixture
def fresh_cloud(own_cloud: LocalCloud) -> LocalCloud:
    """The module's cloud, emptied for one test."""
    own_cloud.reset()
    return own_cloud


# --- pure ---------------------------------------------------------------------------------------


def test_prune_keeps_in_use_and_newest() -> None:
    snaps = [snap(1, 40), snap(2, 30), snap(3, 20), snap(4, 10), snap(5, 1)]
    in_use = {2: ("image_slug in terraform.tfvars",), 1: ("droplet digitalocean_droplet.web[0]",)}
    plan = plan_prune(snaps, in_use, keep=2, older_than=None, now=NOW)
    assert [s.id for s in plan.delete] == [3]
    assert [(k.snapshot.id, k.reasons) for k in plan.keep] == [
        (5, ("newest 2",)),
        (4, ("newest 2",)),
        (2, ("in use: image_slug in terraform.tfvars",)),
        (1, ("in use: droplet digitalocean_droplet.web[0]",)),
    ]


def test_prune_older_than_spares_young_snapshots() -> None:
    snaps = [snap(1, 40), snap(2, 30), snap(3, 20), snap(4, 10)]
    plan = plan_prune(snaps, {}, keep=1, older_than=timedelta(days=25), now=NOW)
    assert [s.id for s in plan.delete] == [2, 1]
    assert [(k.snapshot.id, k.reasons) for k in plan.keep] == [
        (4, ("newest 1", "not older than 25d")),
        (3, ("not older than 25d",)),
    ]


def test_prune_keep_zero_still_spares_in_use() -> None:
    plan = plan_prune([snap(1, 5), snap(2, 3)], {1: ("droplet x",)}, 0, None, NOW)
    assert [s.id for s in plan.delete] == [2]
    assert [k.snapshot.id for k in plan.keep] == [1]


def test_prune_negative_keep_is_refused() -> None:
    with pytest.raises(ScalerError, match="--keep must be 0 or more, got -1"):
        plan_prune([], {}, -1, None, NOW)


def test_newest_ties_break_by_id() -> None:
    same = [snap(7, 1), snap(9, 1), snap(8, 1)]
    assert [s.id for s in project_snapshots(same, "wordpress")] == [9, 8, 7]
    assert [s.id for s in plan_prune(same, {}, 1, None, NOW).delete] == [8, 7]


def test_project_filter_needs_the_underscore() -> None:
    snaps = [snap(1, 1, "wordpress_1"), snap(2, 1, "wordpress-old"), snap(3, 1, "wp_1")]
    assert [s.id for s in project_snapshots(snaps, "wordpress")] == [1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("24h", timedelta(hours=24)),
        ("1d12h", timedelta(hours=36)),
        ("2w", timedelta(weeks=2)),
        ("90m", timedelta(minutes=90)),
        ("30s", timedelta(seconds=30)),
    ],
)
def test_parse_age(text: str, expected: timedelta) -> None:
    assert parse_age(text) == expected


@pytest.mark.parametrize("text", ["7", "d", "7 days", "-1d", "1.5d"])
def test_parse_age_refuses(text: str) -> None:
    with pytest.raises(ScalerError) as err:
        parse_age(text, "--max-age")
    assert str(err.value) == (
        f"--max-age {text!r} is not an age; give a number and a unit: 30m, 24h, 7d, 2w"
    )


def test_format_age() -> None:
    assert [format_age(timedelta(seconds=s)) for s in (5, 600, 7200, 86400 * 3)] == [
        "5s",
        "10m",
        "2h",
        "3d",
    ]


# --- in use -------------------------------------------------------------------------------------


def state_with_droplets(path: Path, images: dict[str, str]) -> Path:
    """A real v4 state file holding droplets `name -> image`."""
    resources = [
        {
            "mode": "managed",
            "type": "digitalocean_droplet",
            "name": name,
            "provider": 'provider["registry.terraform.io/digitalocean/digitalocean"]',
            "instances": [
                {
                    "index_key": 0,
                    "schema_version": 1,
                    "attributes": {"id": str(100 + i), "image": image, "name": f"{name}-0"},
                }
            ],
        }
        for i, (name, image) in enumerate(images.items())
    ]
    state = {
        "version": 4,
        "terraform_version": "1.11.0",
        "serial": 1,
        "lineage": "x",
        "outputs": {},
        "resources": resources,
    }
    path.write_text(json.dumps(state))
    return path


def test_in_use_reads_tfvars_and_state(tmp_path: Path) -> None:
    tfvars = tmp_path / "terraform.tfvars"
    tfvars.write_text('project_name = "wordpress"\nimage_slug = "nyc3,sfo2:170000002" # baked\n')
    state = read_state(
        state_with_droplets(
            tmp_path / "terraform.tfstate",
            {"wp_node": "170000001", "db": "debian-12-x64", "wp_old": "170000002"},
        )
    )
    assert in_use_from(state, tfvars) == {
        170000002: ("image_slug in terraform.tfvars", "droplet digitalocean_droplet.wp_old[0]"),
        170000001: ("droplet digitalocean_droplet.wp_node[0]",),
    }


def test_a_slug_in_tfvars_names_no_snapshot(tmp_path: Path) -> None:
    tfvars = tmp_path / "terraform.tfvars"
    tfvars.write_text('image_slug = "debian-12-x64"\n')
    assert in_use_from(None, tfvars) == {}


def test_per_droplet_pins_in_tfvars_are_in_use(tmp_path: Path) -> None:
    tfvars = tmp_path / "terraform.tfvars"
    tfvars.write_text(
        'image_slug = "170000009"\n'
        'wp_node_images = {\n  "0" = "170000007"\n  "1" = "170000007"\n  "2" = "debian-12-x64"\n}\n'
    )
    assert in_use_from(None, tfvars) == {
        170000009: ("image_slug in terraform.tfvars",),
        170000007: (
            'wp_node_images["0"] in terraform.tfvars',
            'wp_node_images["1"] in terraform.tfvars',
        ),
    }


def test_a_tfvars_file_that_does_not_parse_is_an_error(tmp_path: Path) -> None:
    tfvars = tmp_path / "terraform.tfvars"
    tfvars.write_text('image_slug = "170000009\n')
    with pytest.raises(ScalerError, match=rf"^cannot tell which snapshots {tfvars} names: "):
        in_use_from(None, tfvars)


# --- against the local cloud --------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    return folder


def _run(cloud: LocalCloud, *args: str) -> object:
    return CliRunner().invoke(main, list(args), env=cloud.env())


def test_prune_on_the_local_cloud_keeps_in_use_and_newest(
    fresh_cloud: LocalCloud, site: Path
) -> None:
    ids = make_snapshots(
        fresh_cloud,
        ["wordpress_a", "wordpress_b", "wordpress_c", "wordpress_d", "wordpress_e", "other_a"],
    )
    a, b, c, d, e, other = ids
    (site / "terraform.tfvars").write_text(f'project_name = "wordpress"\nimage_slug = "{b}"\n')
    state_with_droplets(site / "terraform.tfstate", {"wp_node": str(a)})
    args = [
        "snapshots",
        "prune",
        "--keep",
        "2",
        "-C",
        str(site),
        "--state",
        str(site / "terraform.tfstate"),
    ]

    dry = CliRunner().invoke(main, args, env=fresh_cloud.env())
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.splitlines()[:4] == [
        f"keep {e} wordpress_e: newest 2",
        f"keep {d} wordpress_d: newest 2",
        f"keep {b} wordpress_b: in use: image_slug in terraform.tfvars",
        f"keep {a} wordpress_a: in use: droplet digitalocean_droplet.wp_node[0]",
    ]
    assert dry.stdout.splitlines()[4].startswith(f"would delete {c} wordpress_c (")
    assert "dry run: nothing was deleted; pass --yes to delete" in dry.stderr
    assert fresh_cloud.summary()["images"] >= 6

    done = CliRunner().invoke(main, [*args, "--yes", "--json"], env=fresh_cloud.env())
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["deleted"] == [c]
    assert [k["id"] for k in report["keep"]] == [e, d, b, a]

    listed = CliRunner().invoke(
        main,
        [
            "snapshots",
            "list",
            "-C",
            str(site),
            "--state",
            str(site / "terraform.tfstate"),
            "--json",
        ],
        env=fresh_cloud.env(),
    )
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)["snapshots"]
    assert [r["id"] for r in rows] == [e, d, b, a]  # c is gone; other_a is not ours
    assert rows[2]["in_use"] == ["image_slug in terraform.tfvars"]
    assert rows[0]["regions"] == ["nyc3"] and rows[0]["size_gigabytes"] > 0
    client = Cloud("local-token", fresh_cloud.endpoint)
    assert other in [i.id for i in client.snapshot_images()]


def test_list_table_reads_the_terraform_dirs_own_state(
    fresh_cloud: LocalCloud, site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = make_snapshots(fresh_cloud, ["shop_1", "shop_26-11-25-03-00-00"])
    (site / "terraform.tfvars").write_text(f'image_slug = "{second}"\n')
    state_with_droplets(site / "terraform.tfstate", {"web": str(first)})
    # A stray state in the shell's directory must not be taken for the site's.
    monkeypatch.chdir(tmp_path)
    state_with_droplets(tmp_path / "terraform.tfstate", {})
    result = CliRunner().invoke(
        main,
        ["snapshots", "list", "--project", "shop", "-C", str(site)],
        env=fresh_cloud.env(),
    )
    assert result.exit_code == 0, result.output
    header, newest, oldest = result.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "AGE", "SIZE", "REGIONS", "IN", "USE"]
    assert re.fullmatch(
        rf"{second}  shop_26-11-25-03-00-00  \d+s +[\d.]+ GB  nyc3 +image_slug in terraform.tfvars",
        newest,
    ), newest
    assert re.fullmatch(
        rf"{first} +shop_1 +\d+s +[\d.]+ GB  nyc3 +droplet digitalocean_droplet.web\[0\]", oldest
    ), oldest


def test_prune_refuses_without_a_state(fresh_cloud: LocalCloud, site: Path) -> None:
    (site / "terraform.tfvars").write_text('image_slug = "debian-12-x64"\n')
    result = CliRunner().invoke(
        main,
        ["snapshots", "prune", "--yes", "-C", str(site), "--state", str(site / "nope.tfstate")],
        env=fresh_cloud.env(),
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: cannot tell which snapshots are in use: Terraform "
        f"state {site / 'nope.tfstate'} does not exist"
    )
    assert result.stderr.rstrip().endswith("refusing to prune")


def test_prune_refuses_without_tfvars(fresh_cloud: LocalCloud, site: Path) -> None:
    state_with_droplets(site / "terraform.tfstate", {})
    result = CliRunner().invoke(
        main,
        ["snapshots", "prune", "-C", str(site), "--state", str(site / "terraform.tfstate")],
        env=fresh_cloud.env(),
    )
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: cannot tell which snapshot image_slug names: no "
        f"{site / 'terraform.tfvars'}; pass --tfvars FILE\n"
    )


def test_prune_keeps_pinned_and_refuses_a_broken_tfvars(
    fresh_cloud: LocalCloud, site: Path
) -> None:
    old, pinned, new = make_snapshots(fresh_cloud, ["wordpress_a", "wordpress_b", "wordpress_c"])
    tfvars = site / "terraform.tfvars"
    tfvars.write_text(f'image_slug = "{new}"\nwp_node_images = {{ "1" = "{pinned}" }}\n')
    state_with_droplets(site / "terraform.tfstate", {"wp_node": str(new)})
    args = ["snapshots", "prune", "--keep", "0", "-C", str(site), "--yes", "--json"]
    args += ["--state", str(site / "terraform.tfstate")]
    done = CliRunner().invoke(main, args, env=fresh_cloud.env())
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["deleted"] == [old]
    assert {k["id"]: k["reasons"] for k in report["keep"]} == {
        new: [
            "in use: image_slug in terraform.tfvars",
            "in use: droplet digitalocean_droplet.wp_node[0]",
        ],
        pinned: ['in use: wp_node_images["1"] in terraform.tfvars'],
    }

    tfvars.write_text(f'image_slug = "{new}\n')  # an unclosed string: nothing can be told
    refused = CliRunner().invoke(main, args, env=fresh_cloud.env())
    assert refused.exit_code == 1
    assert refused.stderr.startswith(f"Error: cannot tell which snapshots {tfvars} names: ")
    assert refused.stderr.rstrip().endswith("; fix the file; refusing to prune")
    client = Cloud("local-token", fresh_cloud.endpoint)
    assert {pinned, new} <= {i.id for i in client.snapshot_images()}

    listed = CliRunner().invoke(
        main, ["snapshots", "list", "-C", str(site), "--json"], env=fresh_cloud.env()
    )
    assert listed.exit_code == 0, listed.output
    assert listed.stderr.startswith("warning: in-use status unknown for image_slug: ")
    rows = json.loads(listed.stdout)["snapshots"]
    assert [(r["id"], r["in_use"]) for r in rows] == [
        (new, ["droplet digitalocean_droplet.wp_node[0]"]),
        (pinned, []),
    ]
