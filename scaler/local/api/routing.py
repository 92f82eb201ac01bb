"""Requests and routing: the request a handler gets, the route type, matching, pagination."""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scaler.local.api.base import JSON, ApiError

if TYPE_CHECKING:
    from scaler.local.api.models.state import CloudState


@dataclass(frozen=True)
class Request:
    """One API request as a handler sees it."""

    method: str
    path: str
    query: dict[str, str]
    raw_query: str
    body: Any
    params: dict[str, str]
    base: str


Reply = tuple[int, JSON | None]
Handler = Callable[["CloudState", Request], Reply]


@dataclass(frozen=True)
class Route:
    """One API operation: its method, the spec's path template, and the counter's template."""

    method: str
    spec_path: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler


def route(method: str, spec_path: str, handler: Handler) -> Route:
    """A route for a spec path template (the counter's template calls its first parameter {id})."""
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", spec_path)
    template = re.sub(r"\{\w+\}", "{id}", spec_path, count=1)
    return Route(method, spec_path, template, re.compile(regex), handler)


def match(routes: list[Route], method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
    """The route for a request, its path parameters, and whether another method has the path."""
    other = False
    for candidate in routes:
        found = candidate.pattern.fullmatch(path)
        if found is None:
            continue
        if candidate.method == method or (method == "HEAD" and candidate.method == "GET"):
            return (
                candidate,
                {k: urllib.parse.unquote(v) for k, v in found.groupdict().items()},
                False,
            )
        other = True
    return None, {}, other


def paginate(req: Request, key: str, items: list[JSON], extra: JSON | None = None) -> JSON:
    """A list answer: one page of items, links.pages and meta.total, as DigitalOcean pages."""
    try:
        per_page = min(max(int(req.query.get("per_page", 20)), 1), 200)
        page = max(int(req.query.get("page", 1)), 1)
    except ValueError:
        raise ApiError(400, "page and per_page must be positive integers") from None
    total = len(items)
    last = max(math.ceil(total / per_page), 1)
    body: JSON = {key: items[(page - 1) * per_page : page * per_page]}
    if extra:
        body.update(extra)

    def link(number: int) -> str:
        query = {k: v for k, v in req.query.items() if k not in ("page", "per_page")}
        query.update(page=str(number), per_page=str(per_page))
        return f"{req.base}{req.path}?{urllib.parse.urlencode(query)}"

    pages: dict[str, str] = {}
    if page > 1:
        pages.update(first=link(1), prev=link(min(page - 1, last)))
    if page < last:
        pages.update(next=link(page + 1), last=link(last))
    body["links"] = {"pages": pages} if pages else {}
    body["meta"] = {"total": total}
    return body


# --- the cloud -----------------------------------------------------------------------------------
