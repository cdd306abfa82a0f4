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

# A shell starts a background job (`bash .ci/run &`, a CI runner) with SIGINT ignored, and an ignored
# signal stays ignored across exec: the Ctrl+C tests' children (batch, models pull) would never see it.
# Give this process, and so every child, the Ctrl+C a user at a terminal has.
import signal  # noqa: E402

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
