#!/usr/bin/env bash
# A throwaway PostgreSQL server for the test suite, on localhost TCP.
#
#   eval "$(bash .ci/postgres.sh)"            # start one; exports TEST_DATABASE_URL and ZMS_PG_DIR
#   pytest                                    # the suite now also runs against PostgreSQL
#   bash .ci/postgres.sh stop "$ZMS_PG_DIR"   # stop it and delete its files
#
# Subcommands:
#   start [default]  create a cluster in a temp dir, start it, create a role and a database,
#                    wait until the role can log in over TCP with its password, and print
#                    `export ...` lines on stdout (everything else goes to stderr)
#   stop [DIR]       stop the server living in DIR (default $ZMS_PG_DIR) and delete DIR
#   restart [DIR [SECONDS]]  stop that server (pg_ctl stop -m fast), wait SECONDS (default 0) and
#                    start it again: a database restart, as a fault for the tests
#   install          apt-get install Debian's PostgreSQL server if no initdb/pg_ctl is found (root)
#
# Knobs (environment): ZMS_PG_PORT first port to try (default 54329; the next free one is
# taken if it is busy), ZMS_PG_DIR the directory to use (default: a new mktemp -d).
#
# PostgreSQL refuses to run as root: as root the server runs as the `postgres` user.
set -Eeuo pipefail

log() { printf '[postgres.sh] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# Directory holding initdb and pg_ctl of a PostgreSQL server, newest major version first.
find_bindir() {
    local d
    while IFS= read -r d; do
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
            printf '%s\n' "$d"
            return 0
        fi
    done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r)
    # Not Debian's layout (a developer's Homebrew, a source build...): whatever is on PATH.
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 1
}

cmd_install() {
    if bindir=$(find_bindir); then
        log "PostgreSQL server found in $bindir; nothing to install"
        return 0
    fi
    [[ $(id -u) == 0 ]] || die "no PostgreSQL server (initdb/pg_ctl) found; install it (Debian: apt-get install postgresql)"
    command -v apt-get >/dev/null 2>&1 || die "no PostgreSQL server found and no apt-get to install one"
    export DEBIAN_FRONTEND=noninteractive
    local apt_opts=(-y -q --no-install-recommends -o Acquire::Retries=3
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    log "apt-get update"
    apt-get update -q -o Acquire::Retries=3 >&2
    # We make our own cluster; ask Debian's packaging not to create and start a "main" one.
    mkdir -p /etc/postgresql-common/createcluster.d
    printf 'create_main_cluster = false\n' >/etc/postgresql-common/createcluster.d/zms-ci.conf
    log "apt-get install postgresql"
    apt-get install "${apt_opts[@]}" postgresql >&2
    bindir=$(find_bindir) || die "postgresql installed but no initdb/pg_ctl under /usr/lib/postgresql/*/bin"
    log "PostgreSQL server installed in $bindir"
}

is_root() { [[ $(id -u) == 0 ]]; }

# Run a command as the server's owner, from a directory that user can read.
as_pg() {
    if is_root; then
        (cd "$pgdir" && runuser -u postgres -- "$@")
    else
        (cd "$pgdir" && "$@")
    fi
}

port_is_free() {
    python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

stop_server() { # $1 = the directory created by start
    local dir=$1 bin
    [[ -f "$dir/.zms-pg" ]] || die "$dir was not made by .ci/postgres.sh; refusing to touch it"
    bin=$(cat "$dir/bindir" 2>/dev/null || true)
    if [[ -n "$bin" && -f "$dir/data/postmaster.pid" ]]; then
        pgdir=$dir
        as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2 ||
            log "pg_ctl stop failed (server already gone?)"
    fi
}

cmd_start() {
    local bindir
    bindir=$(find_bindir) || die "no PostgreSQL server (initdb/pg_ctl) found: run 'bash .ci/postgres.sh install' as root, or install postgresql"
    pgdir=${ZMS_PG_DIR:-}
    if [[ -z "$pgdir" ]]; then
        pgdir=$(mktemp -d "${TMPDIR:-/tmp}/zms-pg.XXXXXX")
    elif [[ -d "$pgdir/data" ]]; then
        # Re-run on the same directory: throw the old cluster away.
        stop_server "$pgdir"
        rm -rf "$pgdir/data"
    fi
    mkdir -p "$pgdir"
    : >"$pgdir/.zms-pg"
    printf '%s\n' "$bindir" >"$pgdir/bindir"
    if is_root; then
        id postgres >/dev/null 2>&1 ||
            useradd --system --user-group --no-create-home --shell /usr/sbin/nologin postgres
        chown -R postgres: "$pgdir"
    fi
    chmod 700 "$pgdir"

    local user=zms_test db=zms_test password
    password=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')

    local locale_opts=(--no-locale)
    if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then
        locale_opts=(--locale=C.UTF-8)
    fi
    log "initdb ($("$bindir/postgres" --version)) in $pgdir/data"
    as_pg "$bindir/initdb" -D "$pgdir/data" -U postgres --encoding=UTF8 "${locale_opts[@]}" \
        --auth-local=trust --auth-host=scram-sha-256 >"$pgdir/initdb.log" 2>&1 ||
        { cat "$pgdir/initdb.log" >&2; die "initdb failed"; }

    # Durable like production (fsync on); the port is given on the command line.
    cat >>"$pgdir/data/postgresql.conf" <<EOF

# --- .ci/postgres.sh ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$pgdir'
max_connections = 100
fsync = on
synchronous_commit = on
full_page_writes = on
logging_collector = off
EOF

    local port=${ZMS_PG_PORT:-54329} tries=0 started=0
    while ((tries < 50)); do
        if port_is_free "$port"; then
            log "starting on 127.0.0.1:$port"
            if as_pg "$bindir/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w -t 60 \
                -o "-p $port" start >&2; then
                started=1
                break
            fi
            if ! grep -qiE 'already in use|could not bind|could not create any TCP/IP sockets' \
                "$pgdir/server.log" 2>/dev/null; then
                tail -n 30 "$pgdir/server.log" >&2 || true
                die "the server did not start (log above)"
            fi
        fi
        port=$((port + 1))
        tries=$((tries + 1))
    done
    ((started)) || die "no free port found near ${ZMS_PG_PORT:-54329}"
    printf '%s\n' "$port" >"$pgdir/port"

    as_pg "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$pgdir" -p "$port" -U postgres -d postgres >&2 <<SQL
CREATE ROLE $user LOGIN CREATEDB PASSWORD '$password';
CREATE DATABASE $db OWNER $user;
SQL

    # Ready when the role logs in over TCP with its password, as the tests will.
    local libpq_url="postgresql://$user:$password@127.0.0.1:$port/$db" waited=0
    until PGCONNECT_TIMEOUT=5 "$bindir/psql" -X -q -At "$libpq_url" -c 'SELECT 1' >/dev/null 2>&1; do
        ((waited++ < 60)) || die "the server does not accept connections at 127.0.0.1:$port"
        sleep 0.5
    done
    log "ready: $db on 127.0.0.1:$port as $user (fsync=on, max_connections=100)"
    log "stop it with: bash .ci/postgres.sh stop '$pgdir'"

    printf "export TEST_DATABASE_URL='postgresql+psycopg://%s:%s@127.0.0.1:%s/%s'\n" \
        "$user" "$password" "$port" "$db"
    printf "export ZMS_PG_DIR='%s'\n" "$pgdir"
}

cmd_stop() {
    local dir=${1:-${ZMS_PG_DIR:-}}
    [[ -n "$dir" ]] || die "usage: bash .ci/postgres.sh stop DIR (or set ZMS_PG_DIR)"
    [[ -d "$dir" ]] || {
        log "$dir does not exist; nothing to stop"
        return 0
    }
    stop_server "$dir"
    rm -rf "$dir"
    log "stopped and removed $dir"
}

cmd_restart() {
    local dir=${1:-${ZMS_PG_DIR:-}} down=${2:-0} bin
    [[ -n "$dir" && -f "$dir/.zms-pg" ]] || die "usage: bash .ci/postgres.sh restart DIR [SECONDS]"
    bin=$(cat "$dir/bindir")
    pgdir=$dir
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2
    sleep "$down"
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $(cat "$dir/port")" start >&2
}

pgdir=
case "${1:-start}" in
start) cmd_start ;;
stop) cmd_stop "${2:-}" ;;
restart) cmd_restart "${2:-}" ;;
install) cmd_install ;;
*) die "usage: bash .ci/postgres.sh [start|stop DIR|restart DIR|install]" ;;
esac
