#!/usr/bin/env bash
# README command 2: set up .venv (and headless Chromium for the report test), run the test suite.
# The tests read the real samples from ../shared/data (or $SHARED_DATA).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing Debian's chromium (the HTML report is checked in a real headless browser)" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "test: headless Chromium not found; install it (Debian: apt-get install chromium) or the report test fails" >&2
  fi
fi
exec .venv/bin/python -m pytest tests -p no:cacheprovider "$@"
