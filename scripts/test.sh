#!/usr/bin/env bash
# Run the whole test suite: set up (first time only), make sure the real servers the
# integration tests start are installed, then pytest tests/ [ARGS].
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v promtool >/dev/null || need+=(prometheus)
command -v nginx >/dev/null || need+=(nginx)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# The run report is checked in a real headless browser (tests/browser.py).
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need[*]} for the integration tests" >&2
    apt-get update -qq >/dev/null && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing ${need[*]}: install them (Debian: apt-get install ${need[*]})" >&2
    exit 2
  fi
fi
exec .venv/bin/python -m pytest tests/ -n "${CDB_TEST_WORKERS:-2}" --durations=15 "$@"
