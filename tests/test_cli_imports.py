"""`qasr-daemon toggle` runs from a key binding: building the CLI and sending the command imports no engine,
numpy or server code (docs/architecture.md, "The daemon")."""

from __future__ import annotations

import json
import subprocess
import sys

from qasr.daemon.models import catalogue
from qasr.engine import bundle

HEAVY = ("numpy", "onnxruntime", "llama_cpp", "websockets", "h11", "qasr.engine", "qasr.daemon.server.ws_server",
         "qasr.daemon.app", "qasr.daemon.transcription")

PROBE = """
import json, sys
from qasr.daemon.cli.main import main
rc = main(["toggle"])
print(json.dumps({"rc": rc, "modules": sorted(sys.modules)}))
"""


def test_toggle_imports_no_engine_numpy_or_server_code(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "state")}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=60)
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["rc"] != 0 and "not running" in done.stderr  # no daemon here: one line, non-zero
    loaded = [m for m in result["modules"] if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert loaded == [], loaded


def test_the_cli_precision_choices_are_the_engines():
    assert catalogue.ENCODER_CHOICES == bundle.ENCODER_PRECISIONS
    assert catalogue.DECODER_CHOICES == bundle.DECODER_PRECISIONS
