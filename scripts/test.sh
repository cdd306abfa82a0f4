#!/usr/bin/env bash
# Install everything (system packages, venv, dev extras) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --dev
set +e
# a temporary folder of this run's own: pytest prunes its shared /tmp/pytest-of-$USER to the last three runs,
# so a second pytest on the machine (another checkout) would delete this run's fixtures under it
base=$(mktemp -d /tmp/qasr-pytest-XXXXXX)
.venv/bin/python -m pytest -ra --basetemp="$base" "$@"
rc=$?
set -e
# pytest exit 5 = no tests collected: treat as failure so an empty suite never passes silently.
rm -rf "$base"
exit $rc
