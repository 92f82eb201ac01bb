"""Post a run's summary to a webhook (`--notify-url`): Slack-compatible JSON, standard library only.

The body is `{"text": "<one line for people>", ...fields}`: Slack, Mattermost, Rocket.Chat and
Discord's Slack-compatible endpoint show `text` and ignore the rest; other receivers get the
fields (command, outcome, exit_code, sites, ...). Secrets are scrubbed before sending.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from scaler import __version__
from scaler.errors import ScalerError
from scaler.events import scrub

DEFAULT_TIMEOUT = 10.0


class NotifyError(ScalerError):
    """The webhook could not be reached or refused the summary."""


def check_url(url: str) -> str:
    """`url` if it is an http(s) URL with a host; a NotifyError saying what to give otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotifyError(
            f"--notify-url {_shown(url)!r} is not an http(s) URL; "
            "give e.g. https://hooks.slack.com/services/..."
        )
    return url


def _shown(url: str) -> str:
    # Webhook URLs carry their secret in the path: show scheme and host only.
    parts = urllib.parse.urlsplit(url)
    if parts.scheme and parts.hostname:
        return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}/..."
    return url[:40]


def summary_body(text: str, fields: Mapping[str, Any], secrets: Sequence[str] = ()) -> bytes:
    """The JSON body posted: `text` for chat tools plus the summary's fields."""
    body = {"text": text, **fields}
    return json.dumps(scrub(body, secrets), ensure_ascii=False, default=str).encode("utf-8")


def post_summary(
    url: str,
    text: str,
    fields: Mapping[str, Any] | None = None,
    *,
    secrets: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> int:
    """POST the summary to `url` as JSON; returns the HTTP status (2xx), NotifyError otherwise."""
    check_url(url)
    request = urllib.request.Request(
        url,
        data=summary_body(text, fields or {}, secrets),
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"scaler/{__version__}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status: int = response.status
    except urllib.error.HTTPError as err:
        raise NotifyError(
            f"the webhook {_shown(url)} answered {err.code} {err.reason}; check --notify-url"
        ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise NotifyError(
            f"cannot reach the webhook {_shown(url)} ({reason}); check --notify-url"
        ) from None
    return status
