#!/usr/bin/env bash
# README command 2: set up .venv and run the test suite (real data from ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest tests "$@"
