"""Shared fixtures live in tests/fixtures/<topic>.py, one module per topic, loaded here."""

import importlib.util

_PLUGINS = [
    "tests.fixtures.checkpoints",
    "tests.fixtures.bundles",
    "tests.fixtures.desktop",
    "tests.fixtures.engine",
    "tests.fixtures.aligner",
]
pytest_plugins = [p for p in _PLUGINS if importlib.util.find_spec(p) is not None]
