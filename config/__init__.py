"""Typed settings, defaults, TOML loading, XDG paths, service files."""
