"""roles/ansible-welp through packer-build.yml: real ansible-runner, local connection, confined
into a temporary droplet root, WordPress from Debian's package."""

from __future__ import annotations

import functools
import grp
import hashlib
import http.server
import os
import pwd
import shutil
import stat
import subprocess
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import need

from scaler.provision import (
    PLAYBOOK,
    ROLES_DIR,
    ProvisionFailed,
    ProvisionResult,
    run_playbook,
)

DEBIAN_WORDPRESS = Path("/usr/share/wordpress")
DB_FIP = "127.60.3.1"
DOCROOT = "var/www/wordpress"
ROLE = ROLES_DIR / "ansible-welp"

pytestmark = pytest.mark.slow


def bake_inventory() -> dict[str, Any]:
    """What the bake hands Ansible: the Terraform inventory plus the build host packerbox."""
    return {
        "all": {"hosts": ["packerbox", "wp-1", "fip-0"]},
        "wp_node": {"hosts": ["packerbox", "wp-1"]},
        "ha_db_fip": {"hosts": ["fip-0"]},
        "_meta": {
            "hostvars": {
                "wp-1": {"ansible_host": "127.60.2.1"},
                "fip-0": {"ip_address": DB_FIP},
            }
        },
    }


def confined(root: Path, **more: Any) -> dict[str, Any]:
    """Extra vars for a run confined to `root`, as tests and the local cloud run the role."""
    return {
        "welp_root": str(root),
        "welp_become": False,
        "welp_install_packages": False,
        "welp_manage_services": False,
        "welp_owner": pwd.getpwuid(os.getuid()).pw_name,
        "welp_group": grp.getgrgid(os.getgid()).gr_name,
        "welp_db_password": "pa'ss\\word",
        **more,
    }


def provision(root: Path, **more: Any) -> ProvisionResult:
    return run_playbook(bake_inventory(), extravars=confined(root, **more))


@pytest.fixture(scope="session")
def wordpress_src() -> Path:
    need(DEBIAN_WORDPRESS.is_dir(), "Debian's wordpress package is not installed")
    return DEBIAN_WORDPRESS


@pytest.fixture(scope="session")
def baked(tmp_path_factory: pytest.TempPathFactory, wordpress_src: Path) -> Path:
    """One droplet root provisioned from Debian's tree; tests only read it."""
    root = tmp_path_factory.mktemp("droplet") / "root"
    result = provision(root, welp_wordpress_src_dir=str(wordpress_src))
    assert result.ok and result.changed > 0
    return root


def test_wordpress_tree_is_real_and_complete(baked: Path, wordpress_src: Path) -> None:
    docroot = baked / DOCROOT
    for name in ("index.php", "wp-settings.php", "wp-includes/version.php", "wp-admin/index.php"):
        assert (docroot / name).is_file(), name
    assert "$wp_version = '6.1" in (docroot / "wp-includes/version.php").read_text()
    links = [p for p in docroot.rglob("*") if p.is_symlink()]
    assert links == []
    source_dirs = sum(1 for p in wordpress_src.rglob("*") if p.is_dir())
    # Debian's tree has no wp-content/uploads; the role adds it.
    assert not (wordpress_src / "wp-content/uploads").exists()
    assert (docroot / "wp-content/uploads").is_dir()
    assert sum(1 for p in docroot.rglob("*") if p.is_dir()) == source_dirs + 1


def test_wp_config_points_at_the_database_floating_ip(baked: Path) -> None:
    text = (baked / DOCROOT / "wp-config.php").read_text()
    assert f"define('DB_HOST', '{DB_FIP}');" in text
    assert "define('DB_NAME', 'wordpress');" in text
    assert "define('DB_PASSWORD', 'pa\\'ss\\\\word');" in text
    assert "require_once '/etc/scaler/wp-salts.php';" in text
    assert stat.S_IMODE((baked / DOCROOT / "wp-config.php").stat().st_mode) == 0o640


def test_generated_php_is_valid(baked: Path) -> None:
    php = shutil.which("php")
    need(php is not None, "php (CLI) is not installed")
    assert php is not None
    for path in (baked / DOCROOT / "wp-config.php", baked / "etc/scaler/wp-salts.php"):
        out = subprocess.run([php, "-l", str(path)], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stdout + out.stderr


def test_salts_are_generated_and_distinct(baked: Path) -> None:
    lines = [
        line
        for line in (baked / "etc/scaler/wp-salts.php").read_text().splitlines()
        if line.startswith("define(")
    ]
    names = [line.split("'")[1] for line in lines]
    assert names == [
        "AUTH_KEY",
        "SECURE_AUTH_KEY",
        "LOGGED_IN_KEY",
        "NONCE_KEY",
        "AUTH_SALT",
        "SECURE_AUTH_SALT",
        "LOGGED_IN_SALT",
        "NONCE_SALT",
    ]
    values = [line.split("', '", 1)[1].rsplit("');", 1)[0] for line in lines]
    assert len(set(values)) == 8
    assert all(len(v) == 64 and "'" not in v and "\\" not in v for v in values)


def test_every_docroot_directory_is_setgid(baked: Path) -> None:
    dirs = [baked / DOCROOT, *(p for p in (baked / DOCROOT).rglob("*") if p.is_dir())]
    assert len(dirs) > 200
    assert [p for p in dirs if not p.stat().st_mode & stat.S_ISGID] == []


def test_wp_content_is_group_writable(baked: Path) -> None:
    content = baked / DOCROOT / "wp-content"
    entries = [content, *content.rglob("*")]
    assert [p for p in entries if not p.stat().st_mode & stat.S_IWGRP] == []
    # Outside wp-content the tree keeps its modes.
    assert not (baked / DOCROOT / "wp-includes").stat().st_mode & stat.S_IWGRP


def test_webroot_file_names_the_docroot(baked: Path) -> None:
    webroot = (baked / "etc/scaler/webroot").read_text().strip()
    assert webroot == "/var/www/wordpress"
    assert (baked / webroot.lstrip("/") / "index.php").is_file()


def test_nginx_site_and_php_fpm_pool(baked: Path) -> None:
    site = (baked / "etc/nginx/sites-available/wordpress").read_text()
    assert "root /var/www/wordpress;" in site
    assert "fastcgi_pass unix:/run/php/php8.2-fpm-wordpress.sock;" in site
    link = baked / "etc/nginx/sites-enabled/wordpress"
    assert os.readlink(link) == "../sites-available/wordpress"
    assert link.resolve() == (baked / "etc/nginx/sites-available/wordpress").resolve()
    pool = (baked / "etc/php/8.2/fpm/pool.d/wordpress.conf").read_text()
    assert "listen = /run/php/php8.2-fpm-wordpress.sock" in pool
    assert f"user = {pwd.getpwuid(os.getuid()).pw_name}" in pool


def test_nothing_written_outside_the_root(baked: Path) -> None:
    top = sorted(p.name for p in baked.iterdir())
    assert top == ["etc", "var"]


def test_second_run_changes_nothing_and_setgid_reports_its_own_change(
    tmp_path: Path, wordpress_src: Path
) -> None:
    root = tmp_path / "root"
    first = provision(root, welp_wordpress_src_dir=str(wordpress_src))
    salts = (root / "etc/scaler/wp-salts.php").read_text()
    second = provision(root, welp_wordpress_src_dir=str(wordpress_src))
    assert first.changed >= 10
    assert second.changed == 0
    assert second.stats["packerbox"].failed == 0
    assert (root / "etc/scaler/wp-salts.php").read_text() == salts

    # One directory lost its setgid bit and the download dir is gone: only the two
    # one-command tasks report a change, each once (no per-item loop).
    victim = root / DOCROOT / "wp-includes" / "js"
    victim.chmod(victim.stat().st_mode & ~stat.S_ISGID)
    download = root / "var/cache/scaler"
    download.rmdir()
    lines: list[str] = []
    third = run_playbook(
        bake_inventory(),
        extravars=confined(root, welp_wordpress_src_dir=str(wordpress_src)),
        on_progress=lines.append,
    )
    changed = [line.rsplit(" (", 1)[0] for line in lines if line.startswith("changed:")]
    assert changed == [
        "changed: [packerbox] Create the directories the role writes into (one command)",
        "changed: [packerbox] Make every doc root directory setgid (one command)",
    ]
    assert third.changed == 2
    assert victim.stat().st_mode & stat.S_ISGID
    assert download.stat().st_mode & 0o777 == 0o755


PLUGIN_PHP = "<?php\n/*\nPlugin Name: Hello scaler\nVersion: 1.0\n*/\n"


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory, wordpress_src: Path) -> Path:
    """A folder laid out like a download site: a WordPress tarball (one top folder
    "wordpress/", like wordpress.org's) and a plugin zip (one top folder, like a plugin's)."""
    folder = tmp_path_factory.mktemp("release")
    with tarfile.open(
        folder / "wordpress-6.1.tar.gz", "w:gz", compresslevel=1, dereference=True
    ) as tar:
        tar.add(wordpress_src, arcname="wordpress")
    with zipfile.ZipFile(folder / "hello-scaler.1.0.zip", "w") as zf:
        zf.writestr("hello-scaler/hello-scaler.php", PLUGIN_PHP)
    return folder


@pytest.fixture
def loopback_http(release: Path) -> Iterator[str]:
    """Serve `release` over real HTTP on 127.0.0.1; yields the base URL."""
    handler = functools.partial(QuietHandler, directory=str(release))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_archive_and_plugins(tmp_path: Path, release: Path) -> None:
    folder = tmp_path / "plugins" / "local-cache"
    folder.mkdir(parents=True)
    (folder / "local-cache.php").write_text(PLUGIN_PHP.replace("Hello scaler", "Local cache"))
    root = tmp_path / "root"

    extravars = confined(
        root,
        welp_wordpress_archive=str(release / "wordpress-6.1.tar.gz"),
        welp_plugins=[str(release / "hello-scaler.1.0.zip"), f"{folder}/"],
    )
    # Confined runs default the owner and group to whoever runs Ansible.
    del extravars["welp_owner"], extravars["welp_group"]

    result = run_playbook(bake_inventory(), extravars=extravars)

    pool = (root / "etc/php/8.2/fpm/pool.d/wordpress.conf").read_text()
    assert f"user = {pwd.getpwuid(os.getuid()).pw_name}\n" in pool
    assert f"group = {grp.getgrgid(os.getgid()).gr_name}\n" in pool
    plugins = root / DOCROOT / "wp-content/plugins"
    assert result.ok
    assert (root / DOCROOT / "wp-settings.php").is_file()
    assert (plugins / "hello-scaler/hello-scaler.php").read_text() == PLUGIN_PHP
    assert (plugins / "local-cache/local-cache.php").is_file()
    assert (plugins / "akismet").is_dir()
    assert (plugins / "hello-scaler").stat().st_mode & stat.S_ISGID


def test_archive_url_is_checksummed(tmp_path: Path, release: Path, loopback_http: str) -> None:
    tarball = release / "wordpress-6.1.tar.gz"
    good = "sha256:" + hashlib.sha256(tarball.read_bytes()).hexdigest()
    url = f"{loopback_http}/{tarball.name}"
    plugin_url = f"{loopback_http}/hello-scaler.1.0.zip"

    with pytest.raises(ProvisionFailed) as caught:
        provision(
            tmp_path / "bad",
            welp_wordpress_archive=url,
            welp_wordpress_checksum="sha256:" + "0" * 64,
        )
    assert str(caught.value).startswith(
        "provisioning failed at task 'Download the WordPress archive' on packerbox: "
    )
    assert "checksum" in str(caught.value).lower()
    assert not (tmp_path / "bad" / DOCROOT / "wp-settings.php").exists()

    root = tmp_path / "good"
    result = provision(
        root, welp_wordpress_archive=url, welp_wordpress_checksum=good, welp_plugins=[plugin_url]
    )
    assert result.ok
    assert (root / "var/cache/scaler" / tarball.name).read_bytes() == tarball.read_bytes()
    assert (root / DOCROOT / "wp-includes/version.php").is_file()
    plugin = root / DOCROOT / "wp-content/plugins/hello-scaler/hello-scaler.php"
    assert plugin.read_text() == PLUGIN_PHP


def test_missing_archive_names_the_task(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "wordpress-6.4.3.tar.gz"
    with pytest.raises(ProvisionFailed) as caught:
        provision(tmp_path / "root", welp_wordpress_archive=str(missing))
    message = str(caught.value)
    assert message.startswith(
        "provisioning failed at task 'Unpack the WordPress archive' on packerbox: "
    )
    assert f"Could not find or access '{missing}'" in message
    assert "\n" not in message
    result = caught.value.result
    assert result is not None and result.status == "failed" and result.rc == 2
    assert result.failure is not None and result.failure.host == "packerbox"


def test_inventory_without_ha_db_fip_is_refused(tmp_path: Path, wordpress_src: Path) -> None:
    inventory = bake_inventory()
    del inventory["ha_db_fip"]
    with pytest.raises(ProvisionFailed) as caught:
        run_playbook(
            inventory,
            extravars=confined(tmp_path / "root", welp_wordpress_src_dir=str(wordpress_src)),
        )
    message = str(caught.value)
    assert message.startswith("provisioning failed at task 'Check the inputs' on packerbox: ")
    assert "an inventory group ha_db_fip whose first host has hostvar ip_address" in message
    assert not (tmp_path / "root").exists()


def test_defaults_document_every_variable() -> None:
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    text = "\n".join(p.read_text() for p in sorted((ROLE).rglob("*")) if p.is_file())
    used = {word for word in _words(text) if word.startswith("welp_")}
    # registered results and the directory task's own list
    registered = {"welp_setgid", "welp_group_write", "welp_mkdir", "welp_dirs"}
    # Variables without a default on purpose: required, or play-level switches.
    undeclared = {"welp_db_password", "welp_become"}
    assert used - registered - undeclared <= set(defaults)
    assert "wp_db_host" in defaults
    assert defaults["wp_db_host"] == "{{ hostvars[groups['ha_db_fip'][0]]['ip_address'] }}"
    assert "welp_db_password" not in defaults
    readme = (ROLE / "README.md").read_text()
    assert [name for name in defaults if f"`{name}`" not in readme] == []


def test_playbook_targets_only_the_build_host() -> None:
    plays = yaml.safe_load(PLAYBOOK.read_text())
    assert len(plays) == 1
    assert plays[0]["hosts"] == "{{ scaler_build_host | default('packerbox') }}"
    assert plays[0]["roles"] == [{"role": "ansible-welp"}]


def _words(text: str) -> set[str]:
    word = ""
    found: set[str] = set()
    for ch in text + " ":
        if ch.isalnum() or ch == "_":
            word += ch
        else:
            if word:
                found.add(word)
            word = ""
    return found
