#!/usr/bin/env bash
# Back up the cdb database with pg_dump in custom format (-Fc: compressed, restorable
# table by table with pg_restore), check the dump is readable, keep the newest N.
#
# Usage: backup.sh [-d DIR] [-k KEEP] [-n SCHEMA]
#   -d DIR     where dumps go (default: $BACKUP_DIR or ./backups)
#   -k KEEP    dumps to keep, older ones are deleted (default: $BACKUP_KEEP or 14; 0 keeps all)
#   -n SCHEMA  only this schema (a namespaced pipeline); default: the whole database
#
# Connection: the libpq variables PGHOST, PGPORT, PGUSER, PGDATABASE, falling back to
# cdb's POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_DB (default 127.0.0.1,
# 5432, cdb, cdb). Password: PGPASSWORD or ~/.pgpass if set, else the first readable of
# $POSTGRES_PASSWORD_FILE, /run/secrets/postgres_password,
# ${SECRETS_PATH:-deploy/secrets}/postgres_password.
#
# Example, against the compose stack from the host:
#   deploy/postgres/backup.sh -d /var/backups/cdb -k 30
# Daily at 02:15 (cron): 15 2 * * * /opt/cdb/deploy/postgres/backup.sh -d /var/backups/cdb
# Prints the path of the new dump on stdout; exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

dir="${BACKUP_DIR:-./backups}"
keep="${BACKUP_KEEP:-14}"
schema=""
while getopts ":d:k:n:h" opt; do
    case "$opt" in
        d) dir="$OPTARG" ;;
        k) keep="$OPTARG" ;;
        n) schema="$OPTARG" ;;
        h) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [[ $# -ne 0 ]] || ! [[ "$keep" =~ ^[0-9]+$ ]]; then usage >&2; exit 2; fi

# shellcheck source=pgenv.sh source-path=SCRIPTDIR
source "$here/pgenv.sh"
for tool in pg_dump pg_restore; do
    command -v "$tool" >/dev/null || { echo "backup.sh: $tool not found (apt-get install postgresql-client)" >&2; exit 1; }
done

install -d -m 0700 "$dir"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
name="cdb-${PGDATABASE}${schema:+-$schema}-${stamp}.dump"
tmp="$dir/.${name}.partial"
_cdb_cleanup+=("$tmp")

args=(--format=custom --compress=6 --no-password --file="$tmp")
[[ -n "$schema" ]] && args+=(--schema="$schema")
(umask 077 && pg_dump "${args[@]}" "$PGDATABASE")
# A dump that pg_restore cannot list is no backup.
pg_restore --list "$tmp" >/dev/null
mv "$tmp" "$dir/$name"

if [[ "$keep" -gt 0 ]]; then
    # Globs sort by name, and names by time (UTC stamp): all but the newest $keep go.
    shopt -s nullglob
    dumps=("$dir/cdb-${PGDATABASE}${schema:+-$schema}-"[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z.dump)
    if (( ${#dumps[@]} > keep )); then
        rm -f -- "${dumps[@]:0:${#dumps[@]}-keep}"
    fi
fi
echo "$dir/$name"
