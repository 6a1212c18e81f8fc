#!/usr/bin/env bash
# The whole test suite, from a fresh clone: the venv and dev tools, lint, format check, strict types,
# then every test (unit, component, and integration tests against a real OpenSSH server and a real
# single-host Slurm on 127.0.0.1, installed and started by scripts/testbed.sh). Extra arguments go to
# pytest (for example `-m "not integration"` for the fast part only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
echo "== ruff"
.venv/bin/ruff check src tests scripts
.venv/bin/ruff format --check src tests scripts
echo "== mypy"
.venv/bin/mypy
echo "== testbed"
bash scripts/testbed.sh start
echo "== pytest"
.venv/bin/pytest "$@"
