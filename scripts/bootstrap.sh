#!/usr/bin/env bash
# Creates .venv with Python 3.11 and installs the project with its pinned stack (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
if ! command -v "$PY" >/dev/null; then
  echo "bootstrap: $PY not found; install CPython 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
stamp=.venv/.installed-$(cat requirements/constraints.txt setup.py | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  echo "bootstrap: installing the pinned stack into .venv (first run: about 2 minutes)" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt -e '.[test]'
  rm -f .venv/.installed-* && touch "$stamp"
fi
