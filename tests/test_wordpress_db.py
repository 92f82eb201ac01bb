"""WordPress end to end on real droplets, without the balancer: a database droplet provisioned with
roles/ansible-welp-db (db-node.yml) behind a reserved IP, a web droplet from the session's
WordPress snapshot provisioned against that IP, WordPress installed by its boot-time installer;
then the reserved IP moved, a cloud firewall enforced, and the database stopped.

Requests come from this host with the balancer's address as their source (the address a local
balancer dials its targets from), to the web droplet's private address with the Host header of
the site's URL, as a balancer forwards them. One database droplet and one web droplet for the
module, removed at its end (also when a test fails)."""

from __future__ import annotations

import http.client
import re
import secrets
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, BakedWordPress, RealDroplet, boot_real_droplet, cloud_api, wait_for

from scaler.local.api import LocalCloud
from scaler.provision import SshConnection, run_playbook

pytestmark = pytest.mark.slow

DB_PLAYBOOK = ROOT / "db-node.yml"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


@dataclass(frozen=True)
class Stack:
    """The module's database and web droplets, the reserved IP and the balancer's record."""

    cloud: LocalCloud
    db: RealDroplet
    web: RealDroplet
    reserved_ip: str
    lb_id: str
    lb_ip: str
    password: str
    ip_forward: str  # the host's net.ipv4.ip_forward before the module's droplets

    @property
    def site(self) -> str:
        return f"http://{self.lb_ip}"


def get(stack: Stack, path: str, *, source: str | None = None) -> Any:
    """GET path from the web droplet's private address, from `source` (default the balancer's)."""
    conn = http.client.HTTPConnection(
        stack.web.private_ip, 80, timeout=10, source_address=(source or stack.lb_ip, 0)
    )
    try:
        conn.request("GET", path, headers={"Host": stack.lb_ip})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def greeting(address: str, port: int = 3306) -> bytes | str:
    """The first bytes a server at address:port sends (MariaDB greets), or why none came."""
    try:
        with socket.create_connection((address, port), timeout=3) as conn:
            conn.settimeout(3)
            return conn.recv(128)
    except OSError as err:
        return type(err).__name__


def assign(cloud: LocalCloud, ip: str, droplet_id: int) -> None:
    """Assign the reserved IP through the API, as the provider does, and wait for the action."""
    body = {"type": "assign", "droplet_id": droplet_id}
    action = cloud_api(cloud, "POST", f"reserved_ips/{ip}/actions", body)["action"]
    wait_for(
        "the assign action",
        lambda: (
            cloud_api(cloud, "GET", f"reserved_ips/{ip}/actions/{action['id']}")["action"]["status"]
            == "completed"
        ),
    )


def slow_api(cloud: LocalCloud, method: str, path: str) -> None:
    """One API call that may take long: deleting a real droplet waits for its clean shutdown."""
    request = urllib.request.Request(cloud.endpoint + path, method=method)
    request.add_header("Authorization", f"Bearer {cloud.env()['DIGITALOCEAN_TOKEN']}")
    with urllib.request.urlopen(request, timeout=120) as resp:
        resp.read()


def tag(cloud: LocalCloud, name: str, droplet_id: int) -> None:
    cloud_api(cloud, "POST", "tags", {"name": name})
    resources = [{"resource_id": str(droplet_id), "resource_type": "droplet"}]
    cloud_api(cloud, "POST", f"tags/{name}/resources", {"resources": resources})


def ssh_ok(droplet: RealDroplet, command: str) -> str:
    done = droplet.ssh(command, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def web_inventory(reserved_ip: str, lb_ip: str) -> dict[str, Any]:
    """What a bake or a live provisioning hands Ansible: the web host, ha_db_fip, lb_ip."""
    return {
        "all": {"hosts": ["web-1", "fip-0"], "vars": {"lb_ip": lb_ip}},
        "wp_node": {"hosts": ["web-1"]},
        "ha_db_fip": {"hosts": ["fip-0"]},
        "_meta": {"hostvars": {"fip-0": {"ip_address": reserved_ip}}},
    }


@pytest.fixture(scope="module")
def stack(
    baked_wordpress: BakedWordPress, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    cloud = baked_wordpress.cloud
    region = baked_wordpress.region
    keys = tmp_path_factory.mktemp("wordpress-db-keys")
    (keys / "db").mkdir()
    (keys / "web").mkdir()
    password = secrets.token_urlsafe(18) + "'\\\"$"  # quotes and a backslash: SQL, PHP, shell
    made: dict[str, Any] = {"droplets": [], "ip": None, "lb": None}
    ip_forward = IP_FORWARD.read_text()
    try:
        db = boot_real_droplet(cloud, keys / "db", "wpdb-db", "debian-12-x64", region)
        made["droplets"].append(db.id)
        web = boot_real_droplet(cloud, keys / "web", "wpdb-web", baked_wordpress.image_id, region)
        made["droplets"].append(web.id)
        ip = cloud_api(cloud, "POST", "reserved_ips", {"region": region})["reserved_ip"]["ip"]
        made["ip"] = ip
        assign(cloud, ip, db.id)
        rules = [{"entry_protocol": "http", "entry_port": 80}]
        rules[0].update(target_protocol="http", target_port=80)
        lb = cloud_api(
            cloud,
            "POST",
            "load_balancers",
            {"name": "wpdb-lb", "region": region, "forwarding_rules": rules},
        )["load_balancer"]
        made["lb"] = lb["id"]
        tag(cloud, "db_node", db.id)
        tag(cloud, "wp_node", web.id)
        run_playbook(
            {"all": {"hosts": ["db-1"]}, "db_node": {"hosts": ["db-1"]}},
            playbook=DB_PLAYBOOK,
            host="db-1",
            connection=SshConnection(db.public_ip, "root", db.key),
            extravars={"welp_db_password": password, "scaler_db_host": "db-1"},
        )
        run_playbook(
            web_inventory(ip, lb["ip"]),
            host="web-1",
            connection=SshConnection(web.public_ip, "root", web.key),
            extravars={
                "welp_db_password": password,
                "welp_wordpress_package": "wordpress",
                "welp_install_now": True,
                "scaler_build_host": "web-1",
            },
        )
        yield Stack(cloud, db, web, ip, lb["id"], lb["ip"], password, ip_forward)
    finally:
        # each step even when one before it failed; a droplet's delete waits for its shutdown
        calls = [("DELETE", f"droplets/{did}") for did in made["droplets"]]
        if made["ip"]:
            calls.append(("DELETE", f"reserved_ips/{made['ip']}"))
        if made["lb"]:
            calls.append(("DELETE", f"load_balancers/{made['lb']}"))
        for key in cloud_api(cloud, "GET", "account/keys?per_page=200")["ssh_keys"]:
            if key["name"].startswith("wpdb-"):
                calls.append(("DELETE", f"account/keys/{key['id']}"))
        failed = []
        for method, path in calls:
            try:
                slow_api(cloud, method, path)
            except OSError as err:
                failed.append(f"{method} {path}: {err}")
        assert failed == []


def mysql(stack: Stack, sql: str) -> str:
    """Run SQL on the database droplet as its root (Unix socket), SQL on stdin."""
    return ssh_ok(stack.db, f"mysql --batch --skip-column-names wordpress <<'EOF'\n{sql}\nEOF")


def test_wordpress_is_installed_with_the_balancers_address(stack: Stack) -> None:
    wait_for("the installer", lambda: get(stack, "/scaler-wp-health.php")[0] == 200, 90)
    tables = mysql(stack, "SHOW TABLES;").split()
    assert {"wp_options", "wp_posts", "wp_users"} <= set(tables)
    urls = mysql(
        stack,
        "SELECT option_value FROM wp_options WHERE option_name IN ('siteurl', 'home');",
    ).split()
    assert urls == [stack.site, stack.site]
    config = ssh_ok(stack.web, "cat /var/www/wordpress/wp-config.php")
    assert f"define('DB_HOST', '{stack.reserved_ip}');" in config
    # the password reached the database, the config and nothing else: no log of the play
    # or of the droplet's journal holds it
    journal = ssh_ok(stack.web, "journalctl -q --no-pager -u scaler-wordpress-install || true")
    assert "WordPress is installed at " + stack.site in journal
    assert stack.password not in journal


def test_droplets_reach_each_other_but_the_host_forwards_only_their_veths(stack: Stack) -> None:
    dial = (
        "python3 -c 'import socket,sys; s=socket.create_connection((sys.argv[1], 3306), 5); "
        "print(s.recv(128))' "
    )
    for address in (stack.db.private_ip, stack.db.public_ip, stack.reserved_ip):
        assert "mariadb" in ssh_ok(stack.web, dial + address).lower(), address
    # routing between the veths is switched on for them alone, never for the whole host
    ends = [p for p in Path("/proc/sys/net/ipv4/conf").iterdir() if p.name.startswith("s")]
    forwarding = {p.name: (p / "forwarding").read_text().strip() for p in ends}
    network = f"s{stack.cloud.network}-"
    assert forwarding and all(v == "1" for k, v in forwarding.items() if k.startswith(network))
    assert IP_FORWARD.read_text() == stack.ip_forward  # the host's own switch: as it was


def test_front_page_renders_data_from_the_database(stack: Stack) -> None:
    wait_for("the installer", lambda: get(stack, "/scaler-wp-health.php")[0] == 200, 90)
    title = f"scaler-{secrets.token_hex(4)}"
    mysql(stack, f"UPDATE wp_options SET option_value = '{title}' WHERE option_name = 'blogname';")
    status, body = get(stack, "/")
    assert status == 200
    assert title in body and "Hello world!" in body  # the site's name and its first post


def test_reassigning_the_reserved_ip_moves_database_traffic(stack: Stack) -> None:
    assert b"mariadb" in bytes(greeting(stack.reserved_ip)).lower()
    assign(stack.cloud, stack.reserved_ip, stack.web.id)
    try:
        # the web droplet holds the address now and runs no database: refused, health fails
        assert greeting(stack.reserved_ip) == "ConnectionRefusedError"
        assert get(stack, "/scaler-wp-health.php")[0] == 500
    finally:
        assign(stack.cloud, stack.reserved_ip, stack.db.id)
    assert b"mariadb" in bytes(greeting(stack.reserved_ip)).lower()
    assert get(stack, "/scaler-wp-health.php")[0] == 200


def test_firewall_admits_only_the_balancer_and_the_web_droplets(stack: Stack) -> None:
    everywhere = {"addresses": ["0.0.0.0/0", "::/0"]}
    out = [{"protocol": p, "ports": "0", "destinations": everywhere} for p in ("tcp", "udp")]
    web_fw = {
        "name": "wpdb-web",
        "tags": ["wp_node"],
        "inbound_rules": [
            {"protocol": "tcp", "ports": "22", "sources": everywhere},
            {"protocol": "tcp", "ports": "80", "sources": {"load_balancer_uids": [stack.lb_id]}},
        ],
        "outbound_rules": out,
    }
    db_fw = {
        "name": "wpdb-db",
        "tags": ["db_node"],
        "inbound_rules": [
            {"protocol": "tcp", "ports": "22", "sources": everywhere},
            {"protocol": "tcp", "ports": "3306", "sources": {"tags": ["wp_node"]}},
        ],
        "outbound_rules": out,
    }
    made = [
        cloud_api(stack.cloud, "POST", "firewalls", fw)["firewall"]["id"] for fw in (web_fw, db_fw)
    ]
    try:
        # this host's own address: dropped, as DigitalOcean drops (no answer at all)
        with pytest.raises(OSError):
            socket.create_connection((stack.web.public_ip, 80), timeout=3).close()
        with pytest.raises(OSError):
            socket.create_connection((stack.web.private_ip, 80), timeout=3).close()
        assert greeting(stack.reserved_ip) == "TimeoutError"  # the database: web droplets only
        status, body = get(stack, "/")  # from the balancer's address, through to the database
        assert status == 200 and "Hello world!" in body
        ssh_ok(stack.web, "true")  # SSH from anywhere
    finally:
        for fw_id in made:
            cloud_api(stack.cloud, "DELETE", f"firewalls/{fw_id}")
    # no firewall covers them any more: open again
    assert get(stack, "/", source=f"127.{stack.cloud.network}.0.1")[0] == 200
    netns = f"scaler-{stack.cloud.network}-{stack.web.id}"
    tables = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "tables"], capture_output=True, text=True
    )
    assert tables.stdout == ""


def test_stopping_the_database_fails_the_health_path(stack: Stack) -> None:
    assert get(stack, "/scaler-wp-health.php") == (200, "ok\n")
    ssh_ok(stack.db, "systemctl stop mariadb")
    try:
        status, body = get(stack, "/scaler-wp-health.php")
        assert status == 500 and "database connection" in body
        assert get(stack, "/")[0] == 500
        # the PHP-only page knows nothing of the database
        assert get(stack, "/scaler-health.php")[0] == 200
    finally:
        ssh_ok(stack.db, "systemctl start mariadb")
    wait_for("the database", lambda: get(stack, "/scaler-wp-health.php")[0] == 200, 60)


def test_db_role_documents_every_variable() -> None:
    role = ROOT / "roles" / "ansible-welp-db"
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text())
    tasks = (role / "tasks/main.yml").read_text()
    local = {"welp_db_created", "welp_db_settings"}  # the task's own names
    used = set(re.findall(r"\bwelp_db_\w+", tasks))
    assert used - local - {"welp_db_password"} <= set(defaults)
    assert "welp_db_password" not in defaults
    readme = (role / "README.md").read_text()
    assert [name for name in defaults if f"`{name}`" not in readme] == []
    assert "no_log: true" in tasks  # the task whose SQL holds the password


def test_host_is_left_alone() -> None:
    for path in ("/etc/scaler", "/var/www/wordpress", "/etc/nginx/sites-available/wordpress"):
        assert not Path(path).exists(), path
