#!/usr/bin/env bash
# Create the secret files docker compose mounts at /run/secrets/ (random, 32 bytes hex).
#
# Usage: deploy/make-secrets.sh [DIR]
#   DIR defaults to $SECRETS_PATH, else deploy/secrets. Existing files are kept,
#   so running it again never rotates a password behind a running database.
#
# The directory is 0700 (only its owner reaches the files on the host); the files are
# 0644 so the non-root users inside the containers (cdb uid 10001, grafana uid 472)
# can read their bind-mounted copy.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${1:-${SECRETS_PATH:-$here/secrets}}"

install -d -m 0700 "$dir"
for name in redis_password postgres_password grafana_admin_password; do
    file="$dir/$name"
    if [[ -s "$file" ]]; then
        echo "kept    $file"
        continue
    fi
    # Hex only: safe in a redis config line, a libpq URL and a shell.
    (umask 022 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$file")
    chmod 0644 "$file"
    echo "created $file"
done
