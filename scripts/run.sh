#!/usr/bin/env bash
# Quick start: set up (first time only) and run the embedded pipeline: cdb run [ARGS].
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/cdb run "$@"
