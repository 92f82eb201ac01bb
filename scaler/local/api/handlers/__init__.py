"""The /v2 HTTP handlers, one module per resource family (`..routes` maps paths to them)."""
