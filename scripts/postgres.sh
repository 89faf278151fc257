#!/usr/bin/env bash
# Makes a PostgreSQL server available to the tests and exports DG_PG_URL, a superuser URL
# (trust authentication, user postgres).
#
# - If DG_PG_URL is set, or a server answers on 127.0.0.1:$DG_PG_PORT (default 5432), that one
#   is used.
# - Otherwise a private cluster is created once with initdb (trust auth, locale C) under
#   ${XDG_CACHE_HOME:-$HOME/.cache}/decision-gate/pg (override with DG_PG_DIR) and started with
#   pg_ctl on 127.0.0.1, port $DG_PG_PORT if free, else the first free port from 54320; later calls
#   reuse it. Binaries come from PATH or the newest /usr/lib/postgresql/*/bin.
#   PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user; when
#   that user cannot reach the cache directory (a private /root), the cluster lives in
#   /var/tmp/decision-gate-pg instead.
#
# Source it (`. scripts/postgres.sh`) so the export reaches the caller; run on its own, it
# prints the URL. Stop a private cluster with: pg_ctl -D "$DG_PG_DIR/data" stop.

dg_pg_fail() {
  echo "postgres.sh: $*" >&2
  return 1
}

dg_pg_bin() {
  if command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
    return 0
  fi
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -n "$dir" ] && [ -x "$dir/$1" ]; then
    echo "$dir/$1"
    return 0
  fi
  dg_pg_fail "$1 not found: install PostgreSQL (apt-get install postgresql) or set DG_PG_URL"
}

# Whether something accepts TCP connections on 127.0.0.1:$1.
dg_pg_port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

dg_pg_main() {
  local isready
  isready="$(dg_pg_bin pg_isready)" || return 1
  if [ -n "${DG_PG_URL:-}" ]; then
    "$isready" -q -d "$DG_PG_URL" || dg_pg_fail "DG_PG_URL is set but no server answers there"
    return
  fi
  local preferred="${DG_PG_PORT:-5432}"
  if "$isready" -q -h 127.0.0.1 -p "$preferred"; then
    export DG_PG_URL="postgres://postgres@127.0.0.1:$preferred/postgres"
    return 0
  fi

  local initdb pg_ctl cache dir as=()
  initdb="$(dg_pg_bin initdb)" || return 1
  pg_ctl="$(dg_pg_bin pg_ctl)" || return 1
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/decision-gate"
  dir="${DG_PG_DIR:-$cache/pg}"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || dg_pg_fail "running as root needs a 'postgres' user to run the cluster" || return 1
    as=(runuser -u postgres --)
    mkdir -p "$dir" && chown postgres: "$dir"
    if ! "${as[@]}" test -w "$dir"; then
      rmdir "$dir" 2>/dev/null || true
      dir=/var/tmp/decision-gate-pg
      mkdir -p "$dir" && chown postgres: "$dir"
    fi
  fi
  mkdir -p "$dir"
  local data="$dir/data" port
  if [ ! -f "$data/PG_VERSION" ]; then
    "${as[@]}" "$initdb" -D "$data" -U postgres --auth=trust --no-locale -E UTF8 \
      >"$dir/initdb.log" 2>&1 || dg_pg_fail "initdb failed, see $dir/initdb.log" || return 1
  fi
  port="$(cat "$dir/port" 2>/dev/null || true)"
  if [ -n "$port" ] && "$isready" -q -h 127.0.0.1 -p "$port"; then
    export DG_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
    return 0
  fi
  port="$preferred"
  while dg_pg_port_busy "$port"; do
    if [ "$port" = "$preferred" ]; then port=54320; else port=$((port + 1)); fi
    [ "$port" -le 54399 ] || dg_pg_fail "no free port in 54320..54399" || return 1
  done
  echo "$port" >"$dir/port"
  # A stale postmaster.pid from a killed cluster would stop pg_ctl; pg_ctl itself removes it
  # when its process is gone, so a plain start is enough.
  "${as[@]}" "$pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $dir" start >/dev/null \
    || dg_pg_fail "pg_ctl start failed, see $dir/server.log" || return 1
  export DG_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  dg_pg_main
  echo "$DG_PG_URL"
else
  dg_pg_main || return 1
fi
