#!/usr/bin/env bash
# README command 1: set up .venv, generate demo data inside the project, run the jobs end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m beam_jobs.demo --output_dir demo_output "$@"
