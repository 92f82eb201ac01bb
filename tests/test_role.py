"""roles/ansible-welp through packer-build.yml, run as on DigitalOcean: over real SSH into real
droplets (Linux hosts of their own), apt installing nginx, PHP-FPM and Debian's WordPress through
the local cloud's mirror, services started. The session's one WordPress bake (the tutorial's
files) is read through a droplet made from its snapshot; later runs go to that droplet."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import re
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
from conftest import BakedWordPress, RealDroplet, boot_real_droplet, need

from scaler.provision import (
    PLAYBOOK,
    ROLES_DIR,
    ProvisionFailed,
    ProvisionResult,
    SshConnection,
    run_playbook,
)

DB_FIP = "203.0.113.50"  # ha_db_fip in examples/terraform.tfstate, which the bake reads
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


@pytest.fixture(scope="session")
def wordpress_droplet(
    baked_wordpress: BakedWordPress, tmp_path_factory: pytest.TempPathFactory
) -> RealDroplet:
    """A droplet made from the session's WordPress snapshot, running (no Ansible run of its own)."""
    keys = tmp_path_factory.mktemp("wordpress-droplet-key")
    return boot_real_droplet(
        baked_wordpress.cloud, keys, "role-check", baked_wordpress.image_id, baked_wordpress.region
    )


@pytest.fixture(scope="session")
def baked(baked_wordpress: BakedWordPress, wordpress_droplet: RealDroplet) -> Path:
    """That droplet's root, as this host sees it; tests only read it."""
    return Path(baked_wordpress.cloud.machines.root(wordpress_droplet.id))


def provision(droplet: RealDroplet, **extravars: Any) -> ProvisionResult:
    """The role again on a running droplet, over SSH as root, as a bake runs it."""
    return run_playbook(
        bake_inventory(),
        connection=SshConnection(droplet.public_ip, "root", droplet.key),
        extravars={"welp_wordpress_package": "wordpress", **extravars},
        on_progress=None,
    )


def db_password(baked: Path) -> str:
    text = (baked / DOCROOT / "wp-config.php").read_text()
    (password,) = re.findall(r"define\('DB_PASSWORD', '([^']*)'\);", text)
    return password


def test_wordpress_tree_is_real_and_complete(baked: Path) -> None:
    wordpress_src = baked / "usr/share/wordpress"  # Debian's package, in the droplet
    docroot = baked / DOCROOT
    for name in ("index.php", "wp-settings.php", "wp-includes/version.php", "wp-admin/index.php"):
        assert (docroot / name).is_file(), name
    assert "$wp_version = '6.1" in (docroot / "wp-includes/version.php").read_text()
    links = [p for p in docroot.rglob("*") if p.is_symlink()]
    assert links == []
    # Debian's tree links into /etc/wordpress and /usr/share/javascript; the copy follows them
    source_dirs = sum(1 for p in wordpress_src.rglob("*") if p.is_dir() and not p.is_symlink())
    source_dirs += sum(
        1 + sum(1 for q in p.resolve().rglob("*") if q.is_dir())
        for p in wordpress_src.rglob("*")
        if p.is_symlink() and p.is_dir()
    )
    # Debian's tree has no wp-content/uploads; the role adds it.
    assert not (wordpress_src / "wp-content/uploads").exists()
    assert (docroot / "wp-content/uploads").is_dir()
    assert sum(1 for p in docroot.rglob("*") if p.is_dir()) == source_dirs + 1


def test_wp_config_points_at_the_database_floating_ip(baked: Path) -> None:
    text = (baked / DOCROOT / "wp-config.php").read_text()
    assert f"define('DB_HOST', '{DB_FIP}');" in text
    assert "define('DB_NAME', 'wordpress');" in text
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", db_password(baked))  # the bake's random one
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


def test_nginx_and_php_fpm_run_and_start_at_boot(
    baked: Path, wordpress_droplet: RealDroplet
) -> None:
    """Enabled by the role (update-rc.d through Ansible's service module), started by the
    droplet's own init on a droplet that never saw Ansible."""
    for service in ("nginx", "php8.2-fpm"):
        assert (baked / f"etc/rc2.d/S01{service}").is_symlink(), service
        status = wordpress_droplet.ssh(f"service {service} status")
        assert status.returncode == 0, status.stdout + status.stderr
    # nginx, not Apache, answers on port 80 (Debian's wordpress package would bring Apache)
    assert not (baked / "usr/sbin/apache2").exists()


def test_nginx_site_and_php_fpm_pool(baked: Path) -> None:
    site = (baked / "etc/nginx/sites-available/wordpress").read_text()
    assert "root /var/www/wordpress;" in site
    assert "fastcgi_pass unix:/run/php/php8.2-fpm-wordpress.sock;" in site
    link = baked / "etc/nginx/sites-enabled/wordpress"
    assert os.readlink(link) == "../sites-available/wordpress"
    # (resolved by hand: the droplet's root is another mount namespace's, seen through /proc)
    assert (link.parent / os.readlink(link)).read_text() == site
    pool = (baked / "etc/php/8.2/fpm/pool.d/wordpress.conf").read_text()
    assert "listen = /run/php/php8.2-fpm-wordpress.sock" in pool
    assert "user = www-data" in pool


def test_the_bake_never_touched_this_machine(baked: Path) -> None:
    """What the role wrote into the droplet does not exist on the host that ran the bake."""
    for path in ("etc/scaler/wp-salts.php", DOCROOT, "etc/nginx/sites-available/wordpress"):
        assert (baked / path).exists(), path
        assert not (Path("/") / path).exists(), f"/{path} exists on this machine"


def test_second_run_changes_nothing_and_setgid_reports_its_own_change(
    baked: Path, wordpress_droplet: RealDroplet
) -> None:
    password = db_password(baked)
    salts = (baked / "etc/scaler/wp-salts.php").read_text()
    second = provision(wordpress_droplet, welp_db_password=password)
    assert second.changed == 0
    assert second.stats["packerbox"].failed == 0
    assert (baked / "etc/scaler/wp-salts.php").read_text() == salts

    # One directory lost its setgid bit and the download dir is gone: only the two
    # one-command tasks report a change, each once (no per-item loop).
    victim = baked / DOCROOT / "wp-includes" / "js"
    victim.chmod(victim.stat().st_mode & ~stat.S_ISGID)
    download = baked / "var/cache/scaler"
    download.rmdir()
    lines: list[str] = []
    third = run_playbook(
        bake_inventory(),
        connection=SshConnection(wordpress_droplet.public_ip, "root", wordpress_droplet.key),
        extravars={"welp_wordpress_package": "wordpress", "welp_db_password": password},
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


def test_a_quoted_password_is_written_as_php_reads_it(
    baked: Path, wordpress_droplet: RealDroplet, tmp_path: Path
) -> None:
    """A second doc root on the same droplet: quotes and backslashes survive into wp-config."""
    result = provision(
        wordpress_droplet, welp_db_password="pa'ss\\word", welp_docroot="/var/www/quoted"
    )
    assert result.ok
    text = (baked / "var/www/quoted/wp-config.php").read_text()
    assert "define('DB_PASSWORD', 'pa\\'ss\\\\word');" in text
    php = shutil.which("php")
    need(php is not None, "php (CLI) is not installed")
    assert php is not None
    # PHP evaluates the file's own define line (the whole file needs the droplet's salts file)
    (line,) = [x for x in text.splitlines() if x.startswith("define('DB_PASSWORD'")]
    copy = tmp_path / "password.php"
    copy.write_text(f"<?php\n{line}\n")
    out = subprocess.run(
        [php, "-r", f"include '{copy}'; echo DB_PASSWORD;"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.stdout.endswith("pa'ss\\word"), out.stdout + out.stderr


PLUGIN_PHP = "<?php\n/*\nPlugin Name: Hello scaler\nVersion: 1.0\n*/\n"


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory, baked: Path) -> Path:
    """A folder laid out like a download site: a WordPress tarball (one top folder
    "wordpress/", like wordpress.org's; made of the droplet's Debian tree) and a plugin zip."""
    folder = tmp_path_factory.mktemp("release")
    with tarfile.open(
        folder / "wordpress-6.1.tar.gz", "w:gz", compresslevel=1, dereference=True
    ) as tar:
        tar.add(baked / "var/www/wordpress", arcname="wordpress", filter=_no_config)
    with zipfile.ZipFile(folder / "hello-scaler.1.0.zip", "w") as zf:
        zf.writestr("hello-scaler/hello-scaler.php", PLUGIN_PHP)
    return folder


def _no_config(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if info.name.endswith("wp-config.php") else info


@pytest.fixture
def droplet_http(release: Path, baked_wordpress: BakedWordPress) -> Iterator[str]:
    """Serve `release` over real HTTP where droplets reach this host: the host end of their
    veths, 127.N.0.1 (they cannot reach this host's 127.0.0.1). Yields the base URL."""
    handler = functools.partial(QuietHandler, directory=str(release))
    address = f"127.{baked_wordpress.cloud.network}.0.1"
    server = http.server.ThreadingHTTPServer((address, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_archive_and_plugins(
    tmp_path: Path, release: Path, baked: Path, wordpress_droplet: RealDroplet
) -> None:
    """WordPress from a tarball on the controller, plugins from a zip and a folder there."""
    folder = tmp_path / "plugins" / "local-cache"
    folder.mkdir(parents=True)
    (folder / "local-cache.php").write_text(PLUGIN_PHP.replace("Hello scaler", "Local cache"))
    result = provision(
        wordpress_droplet,
        welp_db_password="x",
        welp_wordpress_package="",
        welp_docroot="/var/www/from-archive",
        welp_wordpress_archive=str(release / "wordpress-6.1.tar.gz"),
        welp_plugins=[str(release / "hello-scaler.1.0.zip"), f"{folder}/"],
    )
    docroot = baked / "var/www/from-archive"
    plugins = docroot / "wp-content/plugins"
    assert result.ok
    assert (docroot / "wp-settings.php").is_file()
    assert (plugins / "hello-scaler/hello-scaler.php").read_text() == PLUGIN_PHP
    assert (plugins / "local-cache/local-cache.php").is_file()
    assert (plugins / "akismet").is_dir()
    assert (plugins / "hello-scaler").stat().st_mode & stat.S_ISGID
    assert (plugins / "hello-scaler").stat().st_uid == (baked / DOCROOT).stat().st_uid  # www-data


def test_archive_url_is_checksummed(
    release: Path, droplet_http: str, baked: Path, wordpress_droplet: RealDroplet
) -> None:
    tarball = release / "wordpress-6.1.tar.gz"
    good = "sha256:" + hashlib.sha256(tarball.read_bytes()).hexdigest()
    url = f"{droplet_http}/{tarball.name}"
    plugin_url = f"{droplet_http}/hello-scaler.1.0.zip"
    common = {"welp_db_password": "x", "welp_wordpress_package": "", "welp_wordpress_archive": url}

    with pytest.raises(ProvisionFailed) as caught:
        provision(
            wordpress_droplet,
            **common,
            welp_docroot="/var/www/bad-sum",
            welp_download_dir="/var/cache/bad-sum",
            welp_wordpress_checksum="sha256:" + "0" * 64,
        )
    assert str(caught.value).startswith(
        "provisioning failed at task 'Download the WordPress archive' on packerbox: "
    )
    assert "checksum" in str(caught.value).lower()
    assert not (baked / "var/www/bad-sum/wp-settings.php").exists()

    result = provision(
        wordpress_droplet,
        **common,
        welp_docroot="/var/www/good-sum",
        welp_download_dir="/var/cache/good-sum",
        welp_wordpress_checksum=good,
        welp_plugins=[plugin_url],
    )
    assert result.ok
    assert (baked / "var/cache/good-sum" / tarball.name).read_bytes() == tarball.read_bytes()
    assert (baked / "var/www/good-sum/wp-includes/version.php").is_file()
    plugin = baked / "var/www/good-sum/wp-content/plugins/hello-scaler/hello-scaler.php"
    assert plugin.read_text() == PLUGIN_PHP


def test_missing_archive_names_the_task(tmp_path: Path, wordpress_droplet: RealDroplet) -> None:
    missing = tmp_path / "nope" / "wordpress-6.4.3.tar.gz"
    with pytest.raises(ProvisionFailed) as caught:
        provision(
            wordpress_droplet,
            welp_db_password="x",
            welp_wordpress_package="",
            welp_docroot="/var/www/missing",
            welp_wordpress_archive=str(missing),
        )
    message = str(caught.value)
    assert message.startswith(
        "provisioning failed at task 'Unpack the WordPress archive' on packerbox: "
    )
    assert f"Could not find or access '{missing}'" in message
    assert "\n" not in message
    result = caught.value.result
    assert result is not None and result.status == "failed" and result.rc == 2
    assert result.failure is not None and result.failure.host == "packerbox"


def test_inventory_without_ha_db_fip_is_refused(
    baked: Path, wordpress_droplet: RealDroplet
) -> None:
    inventory = bake_inventory()
    del inventory["ha_db_fip"]
    with pytest.raises(ProvisionFailed) as caught:
        run_playbook(
            inventory,
            connection=SshConnection(wordpress_droplet.public_ip, "root", wordpress_droplet.key),
            extravars={"welp_db_password": "x", "welp_docroot": "/var/www/no-fip"},
        )
    message = str(caught.value)
    assert message.startswith("provisioning failed at task 'Check the inputs' on packerbox: ")
    assert "an inventory group ha_db_fip whose first host has hostvar ip_address" in message
    assert not (baked / "var/www/no-fip").exists()


def test_defaults_document_every_variable() -> None:
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    text = "\n".join(p.read_text() for p in sorted((ROLE).rglob("*")) if p.is_file())
    used = {word for word in _words(text) if word.startswith("welp_")}
    # registered results and the directory task's own list
    registered = {
        "welp_setgid",
        "welp_group_write",
        "welp_mkdir",
        "welp_dirs",
        "welp_install_unit_file",
    }
    # Variables without a default on purpose: required, or play-level switches.
    undeclared = {"welp_db_password"}
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
