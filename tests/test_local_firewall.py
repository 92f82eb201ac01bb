"""What each real droplet's network must hold, from the API's state (reserved IPs, firewall
peers resolved to addresses), and the nftables script that enforces it, checked by real nft."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
from conftest import need

from scaler.local.api.models.network import droplet_policies
from scaler.local.firewall import OPEN, Policy, Rule, render


def droplet(did: int, *tags: str) -> dict[str, Any]:
    return {
        "id": did,
        "public_ip": f"127.9.1.{did}",
        "private_ip": f"127.9.2.{did}",
        "tags": list(tags),
    }


def state(**parts: Any) -> dict[str, Any]:
    return {"droplets": {}, "ips": {}, "firewalls": {}, "lbs": {}, **parts}


WEB_FW = {
    "id": "fw-web",
    "droplet_ids": [],
    "tags": ["wp_node"],
    "inbound_rules": [
        {"protocol": "tcp", "ports": "22", "sources": {"addresses": ["0.0.0.0/0", "::/0"]}},
        {"protocol": "tcp", "ports": "80", "sources": {"load_balancer_uids": ["lb-1"]}},
    ],
    "outbound_rules": [
        {"protocol": "tcp", "ports": "0", "destinations": {"addresses": ["0.0.0.0/0"]}},
    ],
}
DB_FW = {
    "id": "fw-db",
    "droplet_ids": [3],
    "tags": [],
    "inbound_rules": [
        {"protocol": "tcp", "ports": "3306", "sources": {"tags": ["wp_node"], "droplet_ids": [4]}},
        {"protocol": "icmp", "ports": "0", "sources": {"addresses": ["127.9.0.0/16"]}},
    ],
    "outbound_rules": [],
}


def test_policies_resolve_tags_droplets_balancers_and_reserved_ips() -> None:
    held = state(
        droplets={1: droplet(1, "wp_node"), 2: droplet(2, "wp_node"), 3: droplet(3), 4: droplet(4)},
        ips={"127.9.3.1": {"ip": "127.9.3.1", "droplet_id": 3}},
        firewalls={"fw-web": WEB_FW, "fw-db": DB_FW},
        lbs={"lb-1": {"id": "lb-1", "ip": "127.9.4.1"}},
    )
    policies = droplet_policies(held)
    assert policies[4] == OPEN  # no firewall covers it, no reserved IP
    web = Policy(
        firewalled=True,
        inbound=(
            Rule("tcp", "22", ("0.0.0.0/0", "::/0")),
            Rule("tcp", "80", ("127.9.4.1",)),  # the balancer's own address
        ),
        outbound=(Rule("tcp", "0", ("0.0.0.0/0",)),),
    )
    assert policies[1] == policies[2] == web
    assert policies[3] == Policy(
        reserved_ips=("127.9.3.1",),
        firewalled=True,
        inbound=(
            # droplet 4 by id, the wp_node droplets by tag: public and private addresses
            Rule(
                "tcp",
                "3306",
                ("127.9.1.4", "127.9.2.4", "127.9.1.1", "127.9.2.1", "127.9.1.2", "127.9.2.2"),
            ),
            Rule("icmp", "0", ("127.9.0.0/16",)),
        ),
        outbound=(),  # a firewall without outbound rules lets nothing out
    )


def test_a_deleted_droplet_is_no_peer_and_gets_no_policy() -> None:
    gone = droplet(2, "wp_node") | {"gone_at": 1.0}
    held = state(droplets={2: gone, 3: droplet(3)}, firewalls={"fw-db": DB_FW})
    policies = droplet_policies(held)
    assert sorted(policies) == [3]
    assert policies[3].inbound[0] == Rule("tcp", "3306", ())


def test_render_the_table() -> None:
    policy = Policy(
        firewalled=True,
        inbound=(
            Rule("tcp", "80", ("127.9.4.1", "127.9.2.7/32")),
            Rule("tcp", "8000-9000", ("::/0", "0.0.0.0/0")),
            Rule("udp", "53", ()),  # resolved to nobody: no line
            Rule("icmp", "0", ("not-an-address",)),
        ),
        outbound=(Rule("tcp", "all", ("0.0.0.0/0",)),),
    )
    assert render(policy) == (
        "add table inet scaler_firewall\n"
        "delete table inet scaler_firewall\n"
        "table inet scaler_firewall {\n"
        "  chain inbound {\n"
        "    type filter hook input priority filter; policy drop;\n"
        "    ct state established,related accept\n"
        "    iif lo accept\n"
        "    ip saddr { 127.9.2.7/32, 127.9.4.1/32 } meta l4proto tcp tcp dport 80 accept\n"
        "    ip saddr { 0.0.0.0/0 } meta l4proto tcp tcp dport 8000-9000 accept\n"
        "    ip6 saddr { ::/0 } meta l4proto tcp tcp dport 8000-9000 accept\n"
        "  }\n"
        "  chain outbound {\n"
        "    type filter hook output priority filter; policy drop;\n"
        "    ct state established,related accept\n"
        "    oif lo accept\n"
        "    ip daddr { 0.0.0.0/0 } meta l4proto tcp accept\n"
        "  }\n"
        "}\n"
    )
    # an open droplet: the table goes (and "add" first, so deleting one never fails)
    assert render(OPEN) == "add table inet scaler_firewall\ndelete table inet scaler_firewall\n"


@pytest.mark.parametrize(
    "policy",
    [
        OPEN,
        Policy(
            firewalled=True,
            inbound=(
                Rule("tcp", "22", ("0.0.0.0/0", "::/0")),
                Rule("icmp", "0", ("127.9.0.0/16",)),
                Rule("udp", "1-65535", ("127.9.2.1",)),
            ),
        ),
    ],
)
def test_nft_takes_the_script(policy: Policy) -> None:
    """Real nft checks it (-c) in a namespace of its own: never a rule in this host's."""
    need(os.geteuid() == 0 and shutil.which("nft") is not None, "needs root and nft (nftables)")
    done = subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", "-"],
        input=render(policy),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
