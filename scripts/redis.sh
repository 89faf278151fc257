#!/usr/bin/env bash
# Makes a Redis server available to the tests and exports DG_REDIS_URL and DG_REDIS_SERVER (the
# redis-server binary, which tests that stop Redis mid-test start privately).
#
# - If a server answers on 127.0.0.1:$DG_REDIS_PORT (default 6379), that one is used.
# - Otherwise redis-server (from PATH) is started there, without persistence, as a daemon
#   writing its log under ${XDG_CACHE_HOME:-$HOME/.cache}/decision-gate/redis.
#
# Source it (`. scripts/redis.sh`) so the exports reach the caller.

dg_redis_fail() {
  echo "redis.sh: $*" >&2
  return 1
}

dg_redis_main() {
  local server port dir
  server="$(command -v redis-server)" \
    || dg_redis_fail "redis-server not found: install Redis (apt-get install redis-server)" \
    || return 1
  export DG_REDIS_SERVER="$server"
  port="${DG_REDIS_PORT:-6379}"
  export DG_REDIS_URL="redis://127.0.0.1:$port"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    return 0
  fi
  dir="${XDG_CACHE_HOME:-$HOME/.cache}/decision-gate/redis"
  mkdir -p "$dir"
  "$server" --bind 127.0.0.1 --port "$port" --save "" --appendonly no --daemonize yes \
    --logfile "$dir/redis.log" --dir "$dir" || dg_redis_fail "redis-server did not start" || return 1
  local i
  for i in $(seq 1 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  dg_redis_fail "redis-server did not answer on 127.0.0.1:$port (log: $dir/redis.log)"
}

dg_redis_main
