"""Shared fixtures. Tests that need ../shared/data skip without it, except in CI where that is an error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def need(condition: bool, reason: str) -> None:
    """Skip the calling test when `condition` is false; in CI (CI=true) fail instead of skipping."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (skips are errors in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real inputs in ../shared/data."""
    need(SHARED_DATA.is_dir(), f"{SHARED_DATA} is absent (real inputs live beside the checkout)")
    return SHARED_DATA


def shared_files(sub: str, pattern: str = "*") -> list[Path]:
    """Files under ../shared/data/<sub> for parametrizing; empty when the folder is absent."""
    folder = SHARED_DATA / sub
    return sorted(p for p in folder.glob(pattern) if p.is_file()) if folder.is_dir() else []
