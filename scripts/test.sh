#!/usr/bin/env bash
# Install everything (system packages, venv, dev extras) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --dev
set +e
.venv/bin/python -m pytest -ra "$@"
rc=$?
set -e
# pytest exit 5 = no tests collected: treat as failure so an empty suite never passes silently.
exit $rc
