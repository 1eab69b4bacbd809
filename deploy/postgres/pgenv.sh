# shellcheck shell=bash
# Sourced by backup.sh and restore.sh: libpq settings from cdb's variables.
# PG* variables win; then POSTGRES_*; then the compose defaults.
here="${here:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
export PGHOST="${PGHOST:-${POSTGRES_HOST:-127.0.0.1}}"
export PGPORT="${PGPORT:-${POSTGRES_PORT:-5432}}"
export PGUSER="${PGUSER:-${POSTGRES_USER:-cdb}}"
export PGDATABASE="${PGDATABASE:-${POSTGRES_DB:-cdb}}"
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-10}"

# Files removed on exit, whatever the exit; the scripts append to it.
_cdb_cleanup=()
_cdb_on_exit() { if [[ ${#_cdb_cleanup[@]} -gt 0 ]]; then rm -f -- "${_cdb_cleanup[@]}"; fi; }
trap _cdb_on_exit EXIT

# The password from a secret file, through a private passfile (never on a command line,
# never exported as PGPASSWORD).
if [[ -z "${PGPASSWORD:-}" && -z "${PGPASSFILE:-}" && ! -r "${HOME:-/nonexistent}/.pgpass" ]]; then
    for candidate in "${POSTGRES_PASSWORD_FILE:-}" /run/secrets/postgres_password \
                     "${SECRETS_PATH:-$here/../secrets}/postgres_password"; do
        if [[ -n "$candidate" && -r "$candidate" ]]; then
            _cdb_passfile="$(umask 077 && mktemp)"
            # passfile fields: host:port:database:user:password, with \ and : escaped
            _cdb_pw="$(<"$candidate")"
            _cdb_pw="${_cdb_pw//\\/\\\\}"
            _cdb_pw="${_cdb_pw//:/\\:}"
            printf '*:*:*:*:%s\n' "$_cdb_pw" >"$_cdb_passfile"
            unset _cdb_pw
            export PGPASSFILE="$_cdb_passfile"
            _cdb_cleanup+=("$_cdb_passfile")
            break
        fi
    done
fi
