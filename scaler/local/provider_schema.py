"""The local provider's schema, as the real DigitalOcean provider (2.x) declares it: pure data.

Each resource and data source is a `Spec`: its arguments (`A`: name, type, flags, default,
validation) and nested blocks (`B`). `scaler.local.provider` turns a Spec into Terraform's schema,
checks configurations with its validations (answering the real provider's messages) and plans its
defaults. Types are the SDK's: string, int, float, bool, and `list:T`, `set:T`, `map:T` of those.
Flags: R required, O optional, C computed, F ForceNew (a change replaces), S sensitive.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# --- validation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """A validation: its one-line summary, and the SDK's message for a value it refuses."""

    summary: str

    def problem(self, key: str, value: Any) -> str | None:
        """Why value is refused for key (the real provider's wording), or None."""
        return None


@dataclass(frozen=True)
class _NoZero(Check):
    def problem(self, key: str, value: Any) -> str | None:
        if isinstance(value, str) and value == "":
            return f"{key} must not be empty, got {value}"
        if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
            return f"{key} must not be zero, got {value}"
        return None


@dataclass(frozen=True)
class _NotEmpty(Check):
    def problem(self, key: str, value: Any) -> str | None:
        if value == "":
            return f'expected "{key}" to not be an empty string, got {value}'
        return None


@dataclass(frozen=True)
class _Cidr(Check):
    def problem(self, key: str, value: Any) -> str | None:
        try:
            ipaddress.ip_network(str(value), strict=False)
        except ValueError:
            return f"expected {key} to be a valid IPv4 Value, got {value}"
        return None if "/" in str(value) else f"expected {key} to be a valid CIDR, got {value}"


@dataclass(frozen=True)
class _Ipv4(Check):
    def problem(self, key: str, value: Any) -> str | None:
        try:
            ipaddress.IPv4Address(str(value))
        except ValueError:
            return f"expected {key} to contain a valid IPv4 address, got: {value}"
        return None


_DURATION_RE = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")


@dataclass(frozen=True)
class _Duration(Check):
    def problem(self, key: str, value: Any) -> str | None:
        if not _DURATION_RE.fullmatch(str(value)):
            return f'time: invalid duration "{value}"'
        return None


_TAG_RE = re.compile(r"^[a-zA-Z0-9:\-_]{1,255}$")


@dataclass(frozen=True)
class _Tag(Check):
    def problem(self, key: str, value: Any) -> str | None:
        if not _TAG_RE.fullmatch(str(value)):
            return (
                "tags may contain lowercase letters, numbers, colons, dashes, and underscores; "
                "there is a limit of 255 characters per tag"
            )
        return None


NO_ZERO: Check = _NoZero("not empty / not zero (validation.NoZeroValues)")
NOT_EMPTY: Check = _NotEmpty("non-empty string (validation.StringIsNotEmpty)")
CIDR: Check = _Cidr("CIDR notation (validation.IsCIDR)")
IPV4: Check = _Ipv4("IPv4 address (validation.IsIPv4Address)")
DURATION: Check = _Duration('Go duration string, e.g. "30m"')
TAG_NAME: Check = _Tag(r"tag name matching ^[a-zA-Z0-9:\-_]{1,255}$ (tag.ValidateTag)")


@dataclass(frozen=True)
class IntBetween(Check):
    """validation.IntBetween."""

    low: int = 0
    high: int = 0

    def __init__(self, low: int, high: int) -> None:
        object.__setattr__(self, "summary", f"int between {low} and {high}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def problem(self, key: str, value: Any) -> str | None:
        if not self.low <= value <= self.high:
            return f"expected {key} to be in the range ({self.low} - {self.high}), got {value}"
        return None


@dataclass(frozen=True)
class IntAtLeast(Check):
    """validation.IntAtLeast."""

    low: int = 0

    def __init__(self, low: int) -> None:
        object.__setattr__(self, "summary", f"int at least {low}")
        object.__setattr__(self, "low", low)

    def problem(self, key: str, value: Any) -> str | None:
        if value < self.low:
            return f"expected {key} to be at least ({self.low}), got {value}"
        return None


@dataclass(frozen=True)
class LenBetween(Check):
    """validation.StringLenBetween."""

    low: int = 0
    high: int = 0

    def __init__(self, low: int, high: int) -> None:
        object.__setattr__(self, "summary", f"string length between {low} and {high}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def problem(self, key: str, value: Any) -> str | None:
        if not self.low <= len(str(value)) <= self.high:
            return (
                f"expected length of {key} to be in the range ({self.low} - {self.high}), "
                f"got {value}"
            )
        return None


@dataclass(frozen=True)
class OneOf(Check):
    """validation.StringInSlice (or IntInSlice for numbers)."""

    values: tuple[Any, ...] = ()
    ignore_case: bool = False

    def __init__(self, values: tuple[Any, ...], *, ignore_case: bool = False) -> None:
        tail = " (case-insensitive)" if ignore_case else ""
        summary = f"one of: {', '.join(str(v) for v in values)}{tail}"
        object.__setattr__(self, "summary", summary)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "ignore_case", ignore_case)

    def problem(self, key: str, value: Any) -> str | None:
        allowed = [str(v) for v in self.values]
        got = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        ok = got.lower() in [v.lower() for v in allowed] if self.ignore_case else got in allowed
        if ok:
            return None
        quoted = " ".join(f'"{v}"' for v in allowed)
        return f"expected {key} to be one of [{quoted}], got {got}"


@dataclass(frozen=True)
class AllOf(Check):
    """validation.All: every check must pass."""

    checks: tuple[Check, ...] = ()

    def __init__(self, checks: tuple[Check, ...]) -> None:
        object.__setattr__(self, "summary", "all of: " + "; ".join(c.summary for c in checks))
        object.__setattr__(self, "checks", checks)

    def problem(self, key: str, value: Any) -> str | None:
        for check in self.checks:
            found = check.problem(key, value)
            if found:
                return found
        return None


@dataclass(frozen=True)
class Each(Check):
    """A check of every element of a list or set."""

    check: Check = NO_ZERO

    def __init__(self, check: Check) -> None:
        object.__setattr__(self, "summary", f"each element: {check.summary}")
        object.__setattr__(self, "check", check)

    def problem(self, key: str, value: Any) -> str | None:
        for i, item in enumerate(value or []):
            found = self.check.problem(f"{key}.{i}", item)
            if found:
                return found
        return None


# --- arguments, blocks, specs --------------------------------------------------------------------


@dataclass(frozen=True)
class A:
    """An attribute: name, SDK type (`set:string`...), flags (R O C F S), default, validation."""

    name: str
    type: str
    flags: str
    default: Any = None
    check: Check | None = None
    sensitive: bool = False

    @property
    def required(self) -> bool:
        return "R" in self.flags

    @property
    def optional(self) -> bool:
        return "O" in self.flags

    @property
    def computed(self) -> bool:
        return "C" in self.flags

    @property
    def force_new(self) -> bool:
        return "F" in self.flags

    @property
    def is_sensitive(self) -> bool:
        return "S" in self.flags


@dataclass(frozen=True)
class B:
    """A nested block: list, set or single nesting, min/max items as Terraform core sees them.

    computed_only: a computed-only nested schema, which Terraform sees as an attribute holding a
    list (or set) of objects, never configured.
    """

    name: str
    nesting: str
    args: tuple[A, ...] = ()
    blocks: tuple[B, ...] = ()
    min_items: int = 0
    max_items: int = 0
    computed_only: bool = False


@dataclass(frozen=True)
class Spec:
    """A resource or data source: its type name, schema version, arguments, blocks, timeouts."""

    name: str
    version: int = 0
    args: tuple[A, ...] = ()
    blocks: tuple[B, ...] = ()
    timeouts: tuple[tuple[str, str], ...] = ()
    data_source: bool = False
    # Which arguments the SDK's implicit `id` is: resources get an optional, computed string.
    implicit_id: bool = field(default=True)

    def all_args(self) -> tuple[A, ...]:
        """The arguments with the SDK's implicit `id` when the schema does not declare one."""
        if self.implicit_id and not any(a.name == "id" for a in self.args):
            return (A("id", "string", "OC"), *self.args)
        return self.args

    def all_blocks(self) -> tuple[B, ...]:
        """The blocks with the `timeouts` block the SDK adds when timeouts are declared."""
        if not self.timeouts:
            return self.blocks
        timeouts = B(
            "timeouts",
            "single",
            args=tuple(A(k, "string", "O", check=DURATION) for k, _ in self.timeouts),
        )
        return (*self.blocks, timeouts)

    def arg(self, name: str) -> A:
        """One argument by name."""
        for a in self.all_args():
            if a.name == name:
                return a
        raise KeyError(name)


def walk(args: tuple[A, ...], blocks: tuple[B, ...], prefix: str = "") -> Iterator[tuple[str, A]]:
    """Every attribute, nested ones as `block.attribute`."""
    for a in args:
        yield prefix + a.name, a
    for b in blocks:
        yield from walk(b.args, b.blocks, f"{prefix}{b.name}.")


# --- the resources and data sources ----------------------------------------------------------


DROPLET = Spec(
    "digitalocean_droplet",
    version=1,
    timeouts=(("create", "60m"), ("update", "60m"), ("delete", "60s")),
    args=(
        A("image", "string", "RF", check=NO_ZERO),
        A("name", "string", "R", check=NO_ZERO),
        A("region", "string", "OCF", check=NO_ZERO),
        A("size", "string", "R", check=NO_ZERO),
        A("graceful_shutdown", "bool", "O", default=False),
        A("created_at", "string", "C"),
        A("urn", "string", "C"),
        A("disk", "int", "C"),
        A("vcpus", "int", "C"),
        A("memory", "int", "C"),
        A("price_hourly", "float", "C"),
        A("price_monthly", "float", "C"),
        A("resize_disk", "bool", "O", default=True),
        A("status", "string", "C"),
        A("locked", "bool", "C"),
        A("backups", "bool", "O", default=False),
        A("ipv6", "bool", "O", default=False),
        A("ipv6_address", "string", "OC"),
        A("private_networking", "bool", "OC"),
        A("public_networking", "bool", "OCF"),
        A("ipv4_address", "string", "C"),
        A("ipv4_address_private", "string", "C"),
        A("ssh_keys", "set:string", "OF", check=Each(NO_ZERO)),
        A("user_data", "string", "OF", check=NO_ZERO),
        A("volume_ids", "set:string", "OC"),
        A("monitoring", "bool", "OF", default=False),
        A("droplet_agent", "bool", "OF"),
        A("tags", "set:string", "O", check=Each(TAG_NAME)),
        A("vpc_uuid", "string", "OCF", check=NO_ZERO),
        A(
            "gpu_partition_mode",
            "string",
            "OF",
            check=OneOf(("PARTITION_MODE_SPX_NPS1", "PARTITION_MODE_DPX_NPS2")),
        ),
    ),
    blocks=(
        B(
            "backup_policy",
            "list",
            max_items=1,
            args=(
                A("plan", "string", "O", check=OneOf(("daily", "weekly"))),
                A(
                    "weekday",
                    "string",
                    "O",
                    check=OneOf(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
                ),
                A("hour", "int", "O", check=IntBetween(0, 20)),
            ),
        ),
    ),
)

LOADBALANCER = Spec(
    "digitalocean_loadbalancer",
    version=1,
    args=(
        A("region", "string", "OF"),
        A("size", "string", "O", check=OneOf(("lb-small", "lb-medium", "lb-large"))),
        A("size_unit", "int", "OC", check=IntBetween(1, 200)),
        A("name", "string", "R", check=NO_ZERO),
        A("urn", "string", "C"),
        A(
            "algorithm",
            "string",
            "O",
            default="round_robin",
            check=OneOf(("round_robin", "least_connections")),
        ),
        A("droplet_ids", "set:int", "OC"),
        A("droplet_tag", "string", "O", check=TAG_NAME),
        A("redirect_http_to_https", "bool", "O", default=False),
        A("enable_proxy_protocol", "bool", "O", default=False),
        A("enable_backend_keepalive", "bool", "O", default=False),
        A("disable_lets_encrypt_dns_records", "bool", "O", default=False),
        A("vpc_uuid", "string", "OCF", check=NO_ZERO),
        A("subnet_uuid", "string", "OCF", check=NO_ZERO),
        A("ip", "string", "OCF"),
        A("ipv6", "string", "C"),
        A("status", "string", "C"),
        A("http_idle_timeout_seconds", "int", "OC"),
        A("project_id", "string", "OC"),
        A(
            "type",
            "string",
            "OCF",
            check=OneOf(("REGIONAL", "GLOBAL", "REGIONAL_NETWORK"), ignore_case=True),
        ),
        A("target_load_balancer_ids", "set:string", "OC"),
        A("network", "string", "OF", check=OneOf(("EXTERNAL", "INTERNAL"), ignore_case=True)),
        A("network_stack", "string", "OF", check=OneOf(("IPV4", "DUALSTACK"), ignore_case=True)),
        A("tls_cipher_policy", "string", "O", check=OneOf(("DEFAULT", "STRONG"), ignore_case=True)),
    ),
    blocks=(
        B(
            "forwarding_rule",
            "set",
            args=(
                A("certificate_name", "string", "OC", check=NO_ZERO),
                A(
                    "entry_protocol",
                    "string",
                    "R",
                    check=OneOf(("http", "https", "http2", "http3", "tcp", "udp")),
                ),
                A("entry_port", "int", "R", check=IntBetween(1, 65535)),
                A(
                    "target_protocol",
                    "string",
                    "R",
                    check=OneOf(("http", "https", "http2", "tcp", "udp")),
                ),
                A("target_port", "int", "R", check=IntBetween(1, 65535)),
                A("certificate_id", "string", "OC", check=NO_ZERO),
                A("tls_passthrough", "bool", "O", default=False),
            ),
        ),
        B(
            "healthcheck",
            "list",
            max_items=1,
            args=(
                A("protocol", "string", "R", check=OneOf(("http", "https", "tcp"))),
                A("port", "int", "R", check=IntBetween(1, 65535)),
                A("path", "string", "O", check=NO_ZERO),
                A("check_interval_seconds", "int", "O", default=10, check=IntBetween(3, 300)),
                A("response_timeout_seconds", "int", "O", default=5, check=IntBetween(3, 300)),
                A("unhealthy_threshold", "int", "O", default=3, check=IntBetween(2, 10)),
                A("healthy_threshold", "int", "O", default=5, check=IntBetween(2, 10)),
            ),
        ),
        B(
            "sticky_sessions",
            "list",
            max_items=1,
            args=(
                A("type", "string", "O", default="none", check=OneOf(("cookies", "none"))),
                A("cookie_name", "string", "O", check=LenBetween(2, 40)),
                A("cookie_ttl_seconds", "int", "O", check=IntAtLeast(1)),
            ),
        ),
        B(
            "firewall",
            "set",
            max_items=1,
            args=(
                A("allow", "list:string", "O"),
                A("deny", "list:string", "O"),
            ),
        ),
        B(
            "domains",
            "set",
            args=(
                A("name", "string", "R", check=NO_ZERO),
                A("is_managed", "bool", "O", default=False),
                A("certificate_name", "string", "OC", check=NO_ZERO),
                A("certificate_id", "string", "C"),
                A("verification_error_reasons", "list:string", "C"),
                A("ssl_validation_error_reasons", "list:string", "C"),
            ),
        ),
        B(
            "glb_settings",
            "list",
            max_items=1,
            args=(
                A("target_protocol", "string", "R", check=OneOf(("http", "https"))),
                A("target_port", "int", "R", check=OneOf(("80", "443"))),
                A("region_priorities", "map:int", "O"),
                A("failover_threshold", "int", "O", check=IntBetween(1, 99)),
            ),
            blocks=(
                B(
                    "cdn",
                    "list",
                    max_items=1,
                    args=(A("is_enabled", "bool", "O", default=False),),
                ),
            ),
        ),
    ),
)

FLOATING_IP = Spec(
    "digitalocean_floating_ip",
    version=0,
    args=(
        A("region", "string", "RF"),
        A("urn", "string", "C"),
        A("ip_address", "string", "OC", check=IPV4),
        A("droplet_id", "int", "O"),
    ),
)

FLOATING_IP_ASSIGNMENT = Spec(
    "digitalocean_floating_ip_assignment",
    version=0,
    args=(
        A("ip_address", "string", "RF", check=IPV4),
        A("droplet_id", "int", "RF", check=NO_ZERO),
    ),
)

RESERVED_IP = Spec(
    "digitalocean_reserved_ip",
    version=0,
    args=(
        A("region", "string", "RF"),
        A("urn", "string", "C"),
        A("ip_address", "string", "OC", check=IPV4),
        A("droplet_id", "int", "O"),
    ),
)

RESERVED_IP_ASSIGNMENT = Spec(
    "digitalocean_reserved_ip_assignment",
    version=0,
    args=(
        A("ip_address", "string", "RF", check=IPV4),
        A("droplet_id", "int", "RF", check=NO_ZERO),
    ),
)

SSH_KEY = Spec(
    "digitalocean_ssh_key",
    version=0,
    timeouts=(("create", "2m"),),
    args=(
        A("name", "string", "R", check=NO_ZERO),
        A("public_key", "string", "RF", check=NO_ZERO),
        A("fingerprint", "string", "C"),
    ),
)

TAG = Spec(
    "digitalocean_tag",
    version=0,
    args=(
        A("name", "string", "RF", check=TAG_NAME),
        A("total_resource_count", "int", "C"),
        A("droplets_count", "int", "C"),
        A("images_count", "int", "C"),
        A("volumes_count", "int", "C"),
        A("volume_snapshots_count", "int", "C"),
        A("databases_count", "int", "C"),
    ),
)

FIREWALL = Spec(
    "digitalocean_firewall",
    version=0,
    args=(
        A("name", "string", "R", check=NO_ZERO),
        A("droplet_ids", "set:int", "O"),
        A("status", "string", "C"),
        A("created_at", "string", "C"),
        A("tags", "set:string", "O", check=Each(TAG_NAME)),
    ),
    blocks=(
        B(
            "inbound_rule",
            "set",
            args=(
                A("protocol", "string", "R", check=OneOf(("tcp", "udp", "icmp"))),
                A("port_range", "string", "O", check=NO_ZERO),
                A("source_addresses", "set:string", "O", check=Each(NO_ZERO)),
                A("source_droplet_ids", "set:int", "O"),
                A("source_load_balancer_uids", "set:string", "O", check=Each(NO_ZERO)),
                A("source_kubernetes_ids", "set:string", "O", check=Each(NO_ZERO)),
                A("source_tags", "set:string", "O", check=Each(TAG_NAME)),
            ),
        ),
        B(
            "outbound_rule",
            "set",
            args=(
                A("protocol", "string", "R", check=OneOf(("tcp", "udp", "icmp"))),
                A("port_range", "string", "O", check=NO_ZERO),
                A("destination_addresses", "set:string", "O", check=Each(NO_ZERO)),
                A("destination_droplet_ids", "set:int", "O"),
                A("destination_load_balancer_uids", "set:string", "O", check=Each(NO_ZERO)),
                A("destination_kubernetes_ids", "set:string", "O", check=Each(NO_ZERO)),
                A("destination_tags", "set:string", "O", check=Each(TAG_NAME)),
            ),
        ),
        B(
            "pending_changes",
            "list",
            computed_only=True,
            args=(
                A("droplet_id", "int", "O"),
                A("removing", "bool", "O"),
                A("status", "string", "O"),
            ),
        ),
    ),
)

VPC = Spec(
    "digitalocean_vpc",
    version=0,
    timeouts=(("delete", "2m"),),
    args=(
        A("name", "string", "R", check=NO_ZERO),
        A("region", "string", "RF", check=NO_ZERO),
        A("description", "string", "O", check=LenBetween(0, 255)),
        A("ip_range", "string", "OCF", check=CIDR),
        A("urn", "string", "C"),
        A("default", "bool", "C"),
        A("created_at", "string", "C"),
    ),
)

PROJECT = Spec(
    "digitalocean_project",
    version=0,
    timeouts=(("delete", "3m"),),
    args=(
        A("name", "string", "R", check=AllOf((NO_ZERO, LenBetween(1, 175)))),
        A("description", "string", "O", default="", check=LenBetween(0, 255)),
        A("purpose", "string", "O", default="Web Application", check=LenBetween(0, 255)),
        A(
            "environment",
            "string",
            "O",
            check=OneOf(("development", "staging", "production"), ignore_case=True),
        ),
        A("owner_uuid", "string", "C"),
        A("owner_id", "int", "C"),
        A("is_default", "bool", "O", default=False),
        A("created_at", "string", "C"),
        A("updated_at", "string", "C"),
        A("resources", "set:string", "OC"),
    ),
)

DROPLET_SNAPSHOT = Spec(
    "digitalocean_droplet_snapshot",
    version=0,
    args=(
        A("name", "string", "RF", check=NO_ZERO),
        A("droplet_id", "string", "RF", check=NO_ZERO),
        A("regions", "set:string", "C"),
        A("size", "float", "C"),
        A("created_at", "string", "C"),
        A("min_disk_size", "int", "C"),
    ),
)

DS_IMAGE = Spec(
    "digitalocean_image",
    version=0,
    data_source=True,
    args=(
        A("id", "int", "OC", check=NO_ZERO),
        A("name", "string", "OC", check=NOT_EMPTY),
        A("type", "string", "C"),
        A("distribution", "string", "C"),
        A("slug", "string", "OC", check=NOT_EMPTY),
        A("image", "string", "C"),
        A("private", "bool", "C"),
        A("min_disk_size", "int", "C"),
        A("size_gigabytes", "float", "C"),
        A("regions", "set:string", "C"),
        A("created", "string", "C"),
        A("tags", "set:string", "C"),
        A("status", "string", "C"),
        A("error_message", "string", "C"),
        A("description", "string", "C"),
        A(
            "source",
            "string",
            "O",
            default="user",
            check=OneOf(("all", "applications", "distributions", "user"), ignore_case=True),
        ),
    ),
)

DS_IMAGES = Spec(
    "digitalocean_images",
    version=0,
    data_source=True,
    args=(),
    blocks=(
        B(
            "filter",
            "set",
            args=(
                A(
                    "key",
                    "string",
                    "R",
                    check=OneOf(
                        (
                            "created",
                            "description",
                            "distribution",
                            "error_message",
                            "id",
                            "image",
                            "min_disk_size",
                            "name",
                            "private",
                            "regions",
                            "size_gigabytes",
                            "slug",
                            "status",
                            "tags",
                            "type",
                        )
                    ),
                ),
                A("values", "list:string", "R"),
                A("all", "bool", "O", default=False),
                A(
                    "match_by",
                    "string",
                    "O",
                    default="exact",
                    check=OneOf(("exact", "re", "substring")),
                ),
            ),
        ),
        B(
            "sort",
            "list",
            args=(
                A(
                    "key",
                    "string",
                    "R",
                    check=OneOf(
                        (
                            "created",
                            "description",
                            "distribution",
                            "error_message",
                            "id",
                            "image",
                            "min_disk_size",
                            "name",
                            "private",
                            "size_gigabytes",
                            "slug",
                            "status",
                            "type",
                        )
                    ),
                ),
                A("direction", "string", "O", check=OneOf(("asc", "desc"))),
            ),
        ),
        B(
            "images",
            "list",
            computed_only=True,
            args=(
                A("id", "int", "C"),
                A("name", "string", "C"),
                A("type", "string", "C"),
                A("distribution", "string", "C"),
                A("slug", "string", "C"),
                A("image", "string", "C"),
                A("private", "bool", "C"),
                A("min_disk_size", "int", "C"),
                A("size_gigabytes", "float", "C"),
                A("regions", "set:string", "C"),
                A("created", "string", "C"),
                A("tags", "set:string", "C"),
                A("status", "string", "C"),
                A("error_message", "string", "C"),
                A("description", "string", "C"),
            ),
        ),
    ),
)

DS_DROPLET = Spec(
    "digitalocean_droplet",
    version=0,
    data_source=True,
    args=(
        A("id", "int", "OC"),
        A("name", "string", "OC"),
        A("created_at", "string", "C"),
        A("urn", "string", "C"),
        A("region", "string", "C"),
        A("image", "string", "C"),
        A("size", "string", "C"),
        A("disk", "int", "C"),
        A("vcpus", "int", "C"),
        A("memory", "int", "C"),
        A("price_hourly", "float", "C"),
        A("price_monthly", "float", "C"),
        A("status", "string", "C"),
        A("locked", "bool", "C"),
        A("ipv4_address", "string", "C"),
        A("ipv4_address_private", "string", "C"),
        A("ipv6_address", "string", "C"),
        A("ipv6_address_private", "string", "C"),
        A("backups", "bool", "C"),
        A("ipv6", "bool", "C"),
        A("private_networking", "bool", "C"),
        A("monitoring", "bool", "C"),
        A("volume_ids", "set:string", "C"),
        A("tags", "set:string", "C"),
        A("vpc_uuid", "string", "C"),
        A("gpu_partition_mode", "string", "C"),
        A("gpu", "bool", "O", default=False),
        A("tag", "string", "O", check=NO_ZERO),
    ),
)

DS_DROPLETS = Spec(
    "digitalocean_droplets",
    version=0,
    data_source=True,
    args=(A("gpus", "bool", "O", default=False),),
    blocks=(
        B(
            "filter",
            "set",
            args=(
                A(
                    "key",
                    "string",
                    "R",
                    check=OneOf(
                        (
                            "backups",
                            "created_at",
                            "disk",
                            "gpu_partition_mode",
                            "id",
                            "image",
                            "ipv4_address",
                            "ipv4_address_private",
                            "ipv6",
                            "ipv6_address",
                            "ipv6_address_private",
                            "locked",
                            "memory",
                            "monitoring",
                            "name",
                            "price_hourly",
                            "price_monthly",
                            "private_networking",
                            "region",
                            "size",
                            "status",
                            "tags",
                            "urn",
                            "vcpus",
                            "volume_ids",
                            "vpc_uuid",
                        )
                    ),
                ),
                A("values", "list:string", "R"),
                A("all", "bool", "O", default=False),
                A(
                    "match_by",
                    "string",
                    "O",
                    default="exact",
                    check=OneOf(("exact", "re", "substring")),
                ),
            ),
        ),
        B(
            "sort",
            "list",
            args=(
                A(
                    "key",
                    "string",
                    "R",
                    check=OneOf(
                        (
                            "backups",
                            "created_at",
                            "disk",
                            "gpu_partition_mode",
                            "id",
                            "image",
                            "ipv4_address",
                            "ipv4_address_private",
                            "ipv6",
                            "ipv6_address",
                            "ipv6_address_private",
                            "locked",
                            "memory",
                            "monitoring",
                            "name",
                            "price_hourly",
                            "price_monthly",
                            "private_networking",
                            "region",
                            "size",
                            "status",
                            "urn",
                            "vcpus",
                            "vpc_uuid",
                        )
                    ),
                ),
                A("direction", "string", "O", check=OneOf(("asc", "desc"))),
            ),
        ),
        B(
            "droplets",
            "list",
            computed_only=True,
            args=(
                A("id", "int", "C"),
                A("name", "string", "C"),
                A("created_at", "string", "C"),
                A("urn", "string", "C"),
                A("region", "string", "C"),
                A("image", "string", "C"),
                A("size", "string", "C"),
                A("disk", "int", "C"),
                A("vcpus", "int", "C"),
                A("memory", "int", "C"),
                A("price_hourly", "float", "C"),
                A("price_monthly", "float", "C"),
                A("status", "string", "C"),
                A("locked", "bool", "C"),
                A("ipv4_address", "string", "C"),
                A("ipv4_address_private", "string", "C"),
                A("ipv6_address", "string", "C"),
                A("ipv6_address_private", "string", "C"),
                A("backups", "bool", "C"),
                A("ipv6", "bool", "C"),
                A("private_networking", "bool", "C"),
                A("monitoring", "bool", "C"),
                A("volume_ids", "set:string", "C"),
                A("tags", "set:string", "C"),
                A("vpc_uuid", "string", "C"),
                A("gpu_partition_mode", "string", "C"),
            ),
        ),
    ),
)

DS_SSH_KEY = Spec(
    "digitalocean_ssh_key",
    version=0,
    data_source=True,
    args=(
        A("id", "int", "C"),
        A("name", "string", "R"),
        A("public_key", "string", "C"),
        A("fingerprint", "string", "C"),
    ),
)

DS_LOADBALANCER = Spec(
    "digitalocean_loadbalancer",
    version=0,
    data_source=True,
    args=(
        A("id", "string", "O", check=NO_ZERO),
        A("name", "string", "O", check=NO_ZERO),
        A("urn", "string", "C"),
        A("region", "string", "C"),
        A("size_unit", "int", "C"),
        A("size", "string", "C"),
        A("ip", "string", "C"),
        A("algorithm", "string", "C"),
        A("status", "string", "C"),
        A("ipv6", "string", "C"),
        A("droplet_ids", "set:int", "C"),
        A("droplet_tag", "string", "C"),
        A("redirect_http_to_https", "bool", "C"),
        A("enable_proxy_protocol", "bool", "C"),
        A("enable_backend_keepalive", "bool", "C"),
        A("disable_lets_encrypt_dns_records", "bool", "C"),
        A("vpc_uuid", "string", "C"),
        A("subnet_uuid", "string", "C"),
        A("http_idle_timeout_seconds", "int", "C"),
        A("project_id", "string", "C"),
        A("type", "string", "C"),
        A("target_load_balancer_ids", "set:string", "C"),
        A("network", "string", "C"),
    ),
    blocks=(
        B(
            "forwarding_rule",
            "set",
            computed_only=True,
            args=(
                A("entry_protocol", "string", "C"),
                A("entry_port", "int", "C"),
                A("target_protocol", "string", "C"),
                A("target_port", "int", "C"),
                A("certificate_id", "string", "C"),
                A("certificate_name", "string", "C"),
                A("tls_passthrough", "bool", "C"),
            ),
        ),
        B(
            "healthcheck",
            "list",
            computed_only=True,
            args=(
                A("protocol", "string", "C"),
                A("port", "int", "C"),
                A("path", "string", "C"),
                A("check_interval_seconds", "int", "C"),
                A("response_timeout_seconds", "int", "C"),
                A("unhealthy_threshold", "int", "C"),
                A("healthy_threshold", "int", "C"),
            ),
        ),
        B(
            "sticky_sessions",
            "list",
            computed_only=True,
            args=(
                A("type", "string", "C"),
                A("cookie_name", "string", "C"),
                A("cookie_ttl_seconds", "int", "C"),
            ),
        ),
        B(
            "firewall",
            "list",
            computed_only=True,
            args=(
                A("allow", "set:string", "C"),
                A("deny", "set:string", "C"),
            ),
        ),
        B(
            "domains",
            "set",
            computed_only=True,
            args=(
                A("name", "string", "C"),
                A("is_managed", "bool", "C"),
                A("certificate_id", "string", "C"),
                A("certificate_name", "string", "C"),
                A("verification_error_reasons", "list:string", "C"),
                A("ssl_validation_error_reasons", "list:string", "C"),
            ),
        ),
        B(
            "glb_settings",
            "list",
            computed_only=True,
            args=(
                A("target_protocol", "string", "C"),
                A("target_port", "int", "C"),
                A("region_priorities", "map:int", "C"),
                A("failover_threshold", "int", "C"),
            ),
            blocks=(
                B(
                    "cdn",
                    "list",
                    computed_only=True,
                    args=(A("is_enabled", "bool", "C"),),
                ),
            ),
        ),
    ),
)
