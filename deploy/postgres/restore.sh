#!/usr/bin/env bash
# Restore a dump made by backup.sh (pg_dump -Fc) with pg_restore, in one transaction:
# either everything is restored or nothing changes.
#
# Usage: restore.sh [-y] [-c] [-t TARGET_DB] DUMP
#   -t TARGET_DB  restore into this database (default: $PGDATABASE / POSTGRES_DB / cdb);
#                 it must exist (createdb it first to restore beside the live one)
#   -c            drop the objects of the dump before recreating them (--clean --if-exists);
#                 needed to restore over an existing cdb schema
#   -y            do not ask for confirmation
#
# Connection and password: as backup.sh. Stop the cdb services first (at least
# db_writer, risk and execution), or they write while the restore runs:
#   docker compose -f deploy/docker-compose.yml stop cdb_db_writer cdb_risk cdb_execution
#   deploy/postgres/restore.sh -c backups/cdb-cdb-20250101T021500Z.dump
#   docker compose -f deploy/docker-compose.yml start cdb_db_writer cdb_risk cdb_execution
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

yes=0
clean=0
target=""
while getopts ":yct:h" opt; do
    case "$opt" in
        y) yes=1 ;;
        c) clean=1 ;;
        t) target="$OPTARG" ;;
        h) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [[ $# -ne 1 ]]; then usage >&2; exit 2; fi
dump="$1"

# shellcheck source=pgenv.sh source-path=SCRIPTDIR
source "$here/pgenv.sh"
target="${target:-$PGDATABASE}"
command -v pg_restore >/dev/null || { echo "restore.sh: pg_restore not found (apt-get install postgresql-client)" >&2; exit 1; }
[[ -r "$dump" ]] || { echo "restore.sh: cannot read $dump" >&2; exit 1; }
pg_restore --list "$dump" >/dev/null || { echo "restore.sh: $dump is not a pg_dump custom-format archive" >&2; exit 1; }

if [[ "$yes" -ne 1 ]]; then
    mode="into"; [[ "$clean" -eq 1 ]] && mode="OVER the objects in"
    read -r -p "Restore $dump $mode database '$target' on $PGHOST:$PGPORT? [y/N] " answer
    [[ "$answer" == [yY] || "$answer" == [yY][eE][sS] ]] || { echo "aborted" >&2; exit 1; }
fi

args=(--dbname="$target" --single-transaction --exit-on-error --no-owner --no-privileges --no-password)
[[ "$clean" -eq 1 ]] && args+=(--clean --if-exists)
pg_restore "${args[@]}" "$dump"
echo "restored $dump into $target"
