"""The local provider's schema against the real DigitalOcean provider's, attribute by attribute.

../shared/data/do-provider/schema.json holds the real provider's schema (read from its source at
a named commit): for every resource and data source in it, the local provider must declare the
same attributes and blocks with the same type, required/optional/computed/sensitive flags,
ForceNew, default, validation and schema version, as Terraform sees them (the tf schema the
provider serves) and as the provider enforces them (its specs).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest
from conftest import SHARED_DATA, need

from scaler.local import provider_schema as specs
from scaler.local.provider import LocalProvider, tf_schema

SCHEMA = SHARED_DATA / "do-provider" / "schema.json"
_FLAGS = ("required", "optional", "computed", "force_new", "sensitive")
# Terraform sees int and float alike; the specs keep the SDK's type, so both are compared.
_TF_TYPES = {"string": '"string"', "int": '"number"', "float": '"number"', "bool": '"bool"'}


@cache
def _real() -> dict[str, Any]:
    need(SCHEMA.is_file(), f"{SCHEMA} is missing")
    return dict(json.loads(SCHEMA.read_text()))


def _type(kind: str, elem: str | None) -> str:
    return f"{kind}:{elem}" if elem else kind


def _real_attrs(attributes: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, a in attributes.items():
        out[name] = {
            "type": _type(a["type"], a.get("elem_type")),
            **{flag: bool(a.get(flag)) for flag in _FLAGS},
            "default": a.get("default"),
            "validation": a.get("validation"),
        }
    return out


def _real_blocks(blocks: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, b in (blocks or {}).items():
        out[name] = {
            "nesting": b["nesting"],
            "min_items": b.get("core_schema_min_items", b.get("min_items", 0)),
            "max_items": b.get("core_schema_max_items", b.get("max_items", 0)),
            "computed_only": b.get("sdk_config_mode") == "attribute",
            "attributes": _real_attrs(b.get("attributes") or {}),
            "blocks": _real_blocks(b.get("blocks") or {}),
        }
    return out


def _real_schema(entry: dict[str, Any]) -> dict[str, Any]:
    attributes = _real_attrs(entry.get("attributes") or {})
    # The SDK's implicit id: an optional, computed string unless the schema declares one.
    attributes.setdefault("id", _real_attrs({"id": {"type": "string", "optional": True}})["id"])
    attributes["id"]["computed"] = attributes["id"]["computed"] or "id" not in entry["attributes"]
    return {
        "version": entry["schema_version"],
        "timeouts": dict(entry.get("timeouts") or {}),
        "attributes": attributes,
        "blocks": _real_blocks(entry.get("blocks") or {}),
    }


def _spec_attrs(args: tuple[specs.A, ...]) -> dict[str, Any]:
    return {
        a.name: {
            "type": a.type,
            "required": a.required,
            "optional": a.optional,
            "computed": a.computed,
            "force_new": a.force_new,
            "sensitive": a.is_sensitive,
            "default": a.default,
            "validation": a.check.summary if a.check else None,
        }
        for a in args
    }


def _spec_blocks(blocks: tuple[specs.B, ...]) -> dict[str, Any]:
    return {
        b.name: {
            "nesting": b.nesting,
            "min_items": b.min_items,
            "max_items": b.max_items,
            "computed_only": b.computed_only,
            "attributes": _spec_attrs(b.args),
            "blocks": _spec_blocks(b.blocks),
        }
        for b in blocks
    }


def _local_schema(spec: specs.Spec) -> dict[str, Any]:
    return {
        "version": spec.version,
        "timeouts": dict(spec.timeouts),
        "attributes": _spec_attrs(spec.all_args()),
        "blocks": _spec_blocks(spec.all_blocks()),
    }


def _served(spec: specs.Spec) -> dict[str, Any]:
    """What Terraform is told: the tf schema the provider builds from the spec, as protobuf."""
    pb = tf_schema(spec).to_pb()

    def block(b: Any) -> dict[str, Any]:
        return {
            "attributes": {
                a.name: (a.type.decode(), a.required, a.optional, a.computed, a.sensitive)
                for a in b.attributes
            },
            "blocks": {
                n.type_name: (n.nesting, n.min_items, n.max_items, block(n.block))
                for n in b.block_types
            },
        }

    return {"version": pb.version, **block(pb.block)}


def _expected_served(spec: specs.Spec) -> dict[str, Any]:
    """The same, worked out from the spec: computed-only blocks are attributes of objects."""
    nesting = {"list": 2, "set": 3, "single": 1}

    def tf_type(kind: str) -> str:
        outer, _, inner = kind.partition(":")
        return f'["{outer}",{tf_type(inner)}]' if inner else _TF_TYPES[outer]

    def block(args: tuple[specs.A, ...], blocks: tuple[specs.B, ...]) -> dict[str, Any]:
        attributes = {
            a.name: (tf_type(a.type), a.required, a.optional, a.computed, a.is_sensitive)
            for a in args
        }
        for b in blocks:
            if b.computed_only:
                fields = ",".join(f'"{a.name}":{tf_type(a.type)}' for a in b.args)
                kind = "set" if b.nesting == "set" else "list"
                attributes[b.name] = (
                    f'["{kind}",["object",{{{fields}}}]]',
                    False,
                    False,
                    True,
                    False,
                )
        nested = {
            b.name: (nesting[b.nesting], b.min_items, b.max_items, block(b.args, b.blocks))
            for b in blocks
            if not b.computed_only
        }
        return {"attributes": attributes, "blocks": nested}

    return {"version": spec.version, **block(spec.all_args(), spec.all_blocks())}


def _local_types(kind: str) -> dict[str, specs.Spec]:
    provider = LocalProvider()
    classes = provider.get_resources() if kind == "resources" else provider.get_data_sources()
    return {"digitalocean_" + c.get_name(): c.spec for c in classes}


def _names(kind: str) -> list[str]:
    if not SCHEMA.is_file():
        return []
    return sorted(json.loads(SCHEMA.read_text())[kind])


# In the file, not (yet) in the local provider.
_NOT_YET: set[str] = set()


@pytest.mark.parametrize("name", [n for n in _names("resources") if n not in _NOT_YET])
def test_resource_schema_is_the_real_providers(name: str) -> None:
    local = _local_types("resources").get(name)
    assert local is not None, f"the local provider has no resource {name}"
    assert _local_schema(local) == _real_schema(_real()["resources"][name])


@pytest.mark.parametrize("name", _names("data_sources"))
def test_data_source_schema_is_the_real_providers(name: str) -> None:
    local = _local_types("data_sources").get(name)
    assert local is not None, f"the local provider has no data source {name}"
    assert _local_schema(local) == _real_schema(_real()["data_sources"][name])


@pytest.mark.parametrize("kind", ["resources", "data_sources"])
def test_terraform_is_served_the_spec(kind: str) -> None:
    for name, spec in _local_types(kind).items():
        assert _served(spec) == _expected_served(spec), name


def test_every_schema_in_the_file_is_compared() -> None:
    real = _real()
    assert len(_names("resources")) == len(real["resources"]) == 12
    assert len(_names("data_sources")) == len(real["data_sources"]) == 6
    # What is not compared is exactly what the local provider lacks.
    assert set(real["resources"]) - set(_local_types("resources")) == _NOT_YET
    assert set(real["data_sources"]) - set(_local_types("data_sources")) == set()
