#!/usr/bin/env bash
# Create the secret files docker compose mounts at /run/secrets/ (random, 32 bytes hex):
# the Redis, PostgreSQL and Grafana passwords, and cdb_api_token, the token of risk's
# POST /ess/trip and /ess/reset (`cdb ess trip|reset`; cdb refuses one under 16 chars).
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
min_token=16
for name in redis_password postgres_password grafana_admin_password cdb_api_token; do
    file="$dir/$name"
    if [[ -s "$file" ]]; then
        if [[ $name == cdb_api_token ]]; then
            token="$(tr -d '\r\n' <"$file")"
            if (( ${#token} < min_token )); then
                echo "$file: the API token has ${#token} characters, cdb needs at least" \
                     "$min_token: delete the file and run this again" >&2
                exit 1
            fi
        fi
        echo "kept    $file"
        continue
    fi
    # Hex only: safe in a redis config line, a libpq URL and a shell.
    (umask 022 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$file")
    chmod 0644 "$file"
    echo "created $file"
done
