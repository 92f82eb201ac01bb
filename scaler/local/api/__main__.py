"""`python -m scaler.local.api`: run a local cloud in the foreground (what `launch` starts)."""

from __future__ import annotations

from scaler.local.api.server import main

if __name__ == "__main__":
    main()
