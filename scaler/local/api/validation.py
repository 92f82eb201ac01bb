"""Requests checked against DigitalOcean's OpenAPI spec, as the real API checks them.

The spec is DigitalOcean's published `DigitalOcean-public.v2.yaml` (or a subset of it with every
`$ref` inlined), read from a path: `LocalCloud(spec=PATH)`, `scaler local up --spec PATH`, or
`SCALER_LOCAL_SPEC`. An operation the spec describes has its query and JSON body checked before
its handler runs; one it does not describe passes through untouched, so a route added later is
checked as soon as the spec carries it. Without a spec nothing is checked here (the handlers still
refuse what DigitalOcean refuses that the spec does not say, such as a health check's ranges).

The answers follow DigitalOcean's API, which is written in Go: a value of the wrong JSON type
fails while the body is decoded (400 bad_request), a value outside what the operation takes
(a missing field, a value not in an enum, a number out of range, a string not matching its
pattern) is 422 unprocessable_entity. A JSON `null` is what Go's decoder makes of it, the field
left out; properties the spec does not name are ignored; `per_page` above 200 is capped, not
refused; a firewall's icmp rule needs no ports and a load balancer may have neither droplet ids
nor a tag (`_taken` lists where the API is that lenient). jsonschema (the `local` extra) is
used here and nowhere else in the library.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaler.fsutil import write_atomic
from scaler.local.api.base import JSON, ApiError, LocalCloudError

SPEC_ENV = "SCALER_LOCAL_SPEC"
_METHODS = ("get", "put", "post", "delete", "patch", "head")
# A failure of these means the body does not decode into its types (400); the rest are 422.
_TYPE_KEYWORDS = {"type"}


def _status(error: Any) -> int:
    """400 for a value of the wrong JSON type (the decoder fails), else 422."""
    if error.validator in ("oneOf", "anyOf") and error.context and _only_types(error):
        return 400
    return 400 if error.validator in _TYPE_KEYWORDS else 422


@dataclass(frozen=True)
class Operation:
    """What one spec operation takes: its query parameters and its JSON body's schema."""

    query: dict[str, JSON]
    required_query: tuple[str, ...]
    body: JSON | None


class RequestValidator:
    """Checks requests against the operations of one spec (see the module doc)."""

    def __init__(self, operations: dict[tuple[str, str], Operation], source: Path) -> None:
        self.operations = operations
        self.source = source
        self._validators: dict[tuple[str, str], Any] = {}

    def describes(self, method: str, spec_path: str) -> bool:
        """True when the spec has this operation (it is then checked)."""
        return (method.upper(), spec_path) in self.operations

    def check(self, method: str, spec_path: str, query: dict[str, str], body: Any) -> None:
        """Raise DigitalOcean's error answer for a request the operation does not take."""
        op = self.operations.get((method.upper(), spec_path))
        if op is None:
            return
        _check_query(op, query)
        if op.body is None or method.upper() in ("GET", "HEAD"):
            return
        validator = self._validator(method.upper(), spec_path, op.body)
        errors = [e for e in validator.iter_errors(_without_nulls(body)) if not _taken(e)]
        if not errors:
            return
        error = _best(errors)
        raise ApiError(_status(error), _describe(error))

    def _validator(self, method: str, spec_path: str, schema: JSON) -> Any:
        key = (method, spec_path)
        if key not in self._validators:
            import jsonschema  # type: ignore[import-untyped]

            self._validators[key] = jsonschema.Draft4Validator(schema)
        return self._validators[key]


def load_validator(spec: Path | str | None = None) -> RequestValidator | None:
    """The validator for spec (default: $SCALER_LOCAL_SPEC), or None when neither is set."""
    chosen = spec if spec is not None else os.environ.get(SPEC_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser().resolve()
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as err:
        raise LocalCloudError(
            f"cannot read the API spec {path} ({err.strerror}); pass --spec with "
            f"DigitalOcean's OpenAPI file, or unset {SPEC_ENV}"
        ) from None
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        raise LocalCloudError(
            "checking requests against the API spec needs the jsonschema package: "
            "pip install 'scaler[local]'"
        ) from None
    return _load(str(path), stamp)


@functools.lru_cache(maxsize=4)
def _load(path: str, stamp: int) -> RequestValidator:
    """Parse a spec once per process, and keep what it says about requests in a cache file: the
    YAML takes seconds to read (tens on a loaded machine), its operations as JSON a fraction."""
    key = hashlib.sha256(f"{_CACHE_VERSION}\0{path}\0{stamp}".encode()).hexdigest()[:24]
    cached = _cache_dir() / f"requests-{key}.json"
    try:
        raw = json.loads(cached.read_text())
        found = {
            (op["method"], op["path"]): Operation(op["query"], tuple(op["required"]), op["body"])
            for op in raw["operations"]
        }
        return RequestValidator(found, Path(path))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or an unreadable one: read the spec
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(path, encoding="utf-8") as handle:
            spec = yaml.load(handle, Loader=loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise LocalCloudError(f"cannot read the API spec {path} ({err})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("paths"), dict):
        raise LocalCloudError(f"{path} is not an OpenAPI spec (it has no paths)")
    found = operations(spec)
    listed = [
        {"method": m, "path": p, "query": o.query, "required": o.required_query, "body": o.body}
        for (m, p), o in found.items()
    ]
    if os.path.getsize(path) < _CACHE_FROM:
        return RequestValidator(found, Path(path))  # quick to read again
    with contextlib.suppress(OSError, TypeError, ValueError):
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cached, json.dumps({"spec": path, "operations": listed}))
    return RequestValidator(found, Path(path))


_CACHE_VERSION = 1
_CACHE_FROM = 1_000_000  # bytes: smaller specs are read again each time


def _cache_dir() -> Path:
    """Where the request rules read from a spec are kept (beside the base images' cache)."""
    if os.geteuid() == 0:
        return Path("/var/cache/scaler/openapi")
    return Path.home() / ".cache" / "scaler" / "openapi"


def operations(spec: JSON) -> dict[tuple[str, str], Operation]:
    """Every operation of a spec whose `$ref`s are inlined, keyed by (METHOD, path template)."""
    found: dict[tuple[str, str], Operation] = {}
    for path, item in spec["paths"].items():
        if not isinstance(item, dict):
            continue
        shared = [p for p in item.get("parameters") or [] if isinstance(p, dict)]
        for method in _METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            params = shared + [p for p in op.get("parameters") or [] if isinstance(p, dict)]
            query = {p["name"]: p.get("schema") or {} for p in params if p.get("in") == "query"}
            required = tuple(
                p["name"] for p in params if p.get("in") == "query" and p.get("required")
            )
            content = (op.get("requestBody") or {}).get("content") or {}
            schema = (content.get("application/json") or {}).get("schema")
            body = _request_schema(schema) if isinstance(schema, dict) else None
            found[(method.upper(), path)] = Operation(query, required, body)
    return found


def _request_schema(schema: Any) -> Any:
    """An OpenAPI schema as JSON Schema draft 4, as a request sees it: read-only properties are
    the API's to set (it ignores them in a request, so they are neither checked nor required),
    `nullable` allows null, and OpenAPI-only keywords go."""
    if isinstance(schema, list):
        return [_request_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: JSON = {}
    props = schema.get("properties")
    read_only = set()
    if isinstance(props, dict):
        read_only = {k for k, v in props.items() if isinstance(v, dict) and v.get("readOnly")}
    for key, value in schema.items():
        if key in ("example", "examples", "description", "discriminator", "readOnly", "title"):
            continue
        if key in ("writeOnly", "deprecated", "xml", "externalDocs", "nullable"):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {k: _request_schema(v) for k, v in value.items() if k not in read_only}
        elif key == "required" and isinstance(value, list):
            kept = [k for k in value if k not in read_only]
            if kept:
                out[key] = kept
        elif key == "format":
            continue  # formats (uuid, date-time) are not checked by the decoder
        else:
            out[key] = _request_schema(value)
    if "discriminator" in schema and "oneOf" in out:
        # The branch is picked by the discriminator, so more than one may match: any will do.
        out["anyOf"] = out.pop("oneOf")
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _check_query(op: Operation, query: dict[str, str]) -> None:
    for name in op.required_query:
        if not query.get(name):
            raise ApiError(422, f"{name} is required.")
    for name, value in query.items():
        schema = op.query.get(name)
        if schema is None:
            continue  # the API ignores a query parameter it does not take
        kind = schema.get("type")
        if kind == "integer":
            try:
                number = int(value)
            except ValueError:
                raise ApiError(400, f"{name} must be an integer, got {value!r}.") from None
            low = schema.get("minimum")
            # DigitalOcean serves at most 200 a page when more are asked for.
            high = None if name == "per_page" else schema.get("maximum")
            if (low is not None and number < low) or (high is not None and number > high):
                raise ApiError(422, f"{name} must be {_bounds(low, high)}, got {number}.")
        elif kind == "boolean" and value.lower() not in ("true", "false", "1", "0"):
            raise ApiError(400, f"{name} must be true or false, got {value!r}.")
        enum = schema.get("enum")
        if enum and value not in [str(e) for e in enum]:
            raise ApiError(422, f"{name} must be one of {_choices(enum)}, got {value!r}.")


def _taken(error: Any) -> bool:
    """Where DigitalOcean takes what its spec says it refuses (its own provider sends these)."""
    # A firewall's icmp rule has no ports: the provider leaves them out, the API answers "0".
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        if missing == ["ports"] and error.instance.get("protocol") == "icmp":
            return True
    # A load balancer with neither droplet_ids nor a tag: made empty (the provider sends that).
    if error.validator == "oneOf" and error.context:
        for subs in _branches(error).values():
            if all(
                s.validator == "required"
                and isinstance(s.instance, dict)
                and {k for k in s.validator_value if k not in s.instance} <= {"droplet_ids", "tag"}
                for s in subs
            ):
                return True
    return False


def _branches(error: Any) -> dict[Any, list[Any]]:
    """A failed oneOf/anyOf's errors by the branch they come from."""
    found: dict[Any, list[Any]] = {}
    for sub in error.context:
        found.setdefault(sub.relative_schema_path[0], []).append(sub)
    return found


def _without_nulls(value: Any) -> Any:
    """A body as Go's decoder sees it: a null member is a member left out."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _best(errors: list[Any]) -> Any:
    """The error a person should hear about. Inside a oneOf/anyOf it comes from the shape the
    request chose: the branch it misses fewest fields of (a create by droplet ids is told about
    its bad health check, not that it lacks a tag), then the branch with fewest errors."""
    error = max(errors, key=_weight)
    while error.context and error.validator in ("oneOf", "anyOf"):
        if _only_types(error):
            break  # "a string or an integer" says it all
        branches = _branches(error)
        depth = len(error.absolute_path)

        error = max(min(branches.values(), key=functools.partial(_cost, depth=depth)), key=_weight)
    return error


def _cost(subs: list[Any], depth: int) -> tuple[int, int]:
    """How far a request is from a branch: fields of it left out, then errors in all."""
    missing = sum(1 for s in subs if s.validator == "required" and len(s.absolute_path) == depth)
    return missing, len(subs)


def _only_types(error: Any) -> bool:
    """True when every branch failed on its type alone, at the same place."""
    return all(
        sub.validator == "type" and sub.absolute_path == error.absolute_path
        for sub in error.context
    )


def _weight(error: Any) -> tuple[int, bool]:
    """Deeper errors say more; a failed oneOf/anyOf says less than the errors inside it."""
    return len(error.absolute_path), error.validator not in ("oneOf", "anyOf")


def _where(path: Iterator[Any] | Any) -> str:
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"{parts.pop() if parts else ''}[{part}]")
        else:
            parts.append(str(part))
    return ".".join(parts)


def _describe(error: Any) -> str:
    """A one-line message naming the field, in DigitalOcean's manner."""
    field = _where(error.absolute_path)
    name = field or "The request body"
    kind, rule, value = error.validator, error.validator_value, error.instance
    if kind == "required":
        missing = [k for k in rule if isinstance(value, dict) and k not in value]
        what = ".".join(filter(None, [field, missing[0] if missing else ""]))
        return f"{what} is required."
    if kind == "type":
        wanted = " or ".join(rule) if isinstance(rule, list) else rule
        return f"{name} must be {_article(wanted)}, got {json.dumps(value)[:60]}."
    if kind == "enum":
        return f"{name} must be one of {_choices(rule)}, got {json.dumps(value)[:60]}."
    if kind in ("minimum", "maximum"):
        low, high = error.schema.get("minimum"), error.schema.get("maximum")
        return f"{name} must be {_bounds(low, high)}, got {value}."
    if kind == "minItems":
        return f"{name} must have at least {rule} item{'s' if rule != 1 else ''}."
    if kind == "maxItems":
        return f"{name} must have at most {rule} items."
    if kind == "minLength":
        return f"{name} must be at least {rule} characters long."
    if kind == "maxLength":
        return f"{name} must be at most {rule} characters long."
    if kind == "pattern":
        return f"{name} {json.dumps(value)[:60]} is not valid (it must match {rule})."
    if kind in ("oneOf", "anyOf") and error.context and _only_types(error):
        kinds = [k for sub in error.context for k in _listed(sub.validator_value)]
        wanted = " or ".join(_article(k) for k in kinds)
        return f"{name} must be {wanted}, got {json.dumps(value)[:60]}."
    if kind == "oneOf":
        keys = [_required(branch) & set(value or ()) for branch in rule]
        if len(keys) == 2 and all(len(k - keys[1 - i]) == 1 for i, k in enumerate(keys)):
            first, second = (min(k - keys[1 - i]) for i, k in enumerate(keys))
            return f"Specify either {first} or {second}, not both."
        return f"{name} matches more than one of the request shapes the API takes."
    return f"{name} is not valid: {error.message[:120]}."


def _required(schema: Any) -> set[str]:
    """The fields a schema (and the allOf parts of it) requires."""
    if not isinstance(schema, dict):
        return set()
    found = set(schema.get("required") or ())
    for part in schema.get("allOf") or ():
        found |= _required(part)
    return found


def _listed(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _bounds(low: Any, high: Any) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f"at least {low}" if low is not None else f"at most {high}"


def _choices(enum: list[Any]) -> str:
    return ", ".join(str(e) for e in enum)


def _article(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"
