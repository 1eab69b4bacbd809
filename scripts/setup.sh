#!/usr/bin/env bash
# Set up cdb on a fresh machine: a virtual environment with the pinned dependencies.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "cdb needs Python 3.11 or newer (found: $("$PY" --version 2>&1)); set PYTHON=..." >&2
  exit 2
fi
stamp=.venv/.cdb-setup
want="$(cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-16)${1:-}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
extras=()
if [ "${1:-}" = "--dev" ]; then
  # The dev group of pyproject.toml, pinned by constraints.txt like everything else.
  mapfile -t extras < <(.venv/bin/python - <<'PY'
import tomllib
for req in tomllib.load(open("pyproject.toml", "rb"))["dependency-groups"]["dev"]:
    print(req)
PY
)
fi
target=.
# The tests drive the Binance venue (ccxt, an optional extra) against FakeBinance.
[ "${1:-}" = "--dev" ] && target=".[binance]"
log=$(mktemp)
if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -c constraints.txt -e "$target" "${extras[@]}" >"$log" 2>&1; then
  cat "$log" >&2
  echo "setup failed: pip could not install cdb (see above)" >&2
  exit 2
fi
rm -f "$log"
echo "$want" > "$stamp"
