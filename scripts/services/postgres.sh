# shellcheck shell=bash
# PostgreSQL for the callcat-postgres tests. Sourced by scripts/test, which
# provides $ROOT and on_exit and then calls start_postgres.
#
# Uses CALLCAT_TEST_POSTGRES_URL when it is already set (any reachable server);
# otherwise the machine's local server on 127.0.0.1:5432 (user postgres, trust
# auth, database `test`), starting the cluster if it is down. Fails clearly if
# PostgreSQL cannot be reached: in CI the PostgreSQL tests must run, not skip.
#
# No on_exit cleanup: every test drops the schema it created; and a cluster this
# script had to start stays up (it is a machine service others may be using).

_pg_fail() {
  echo "postgres: $*" >&2
  return 1
}

start_postgres() {
  command -v pg_isready >/dev/null 2>&1 ||
    _pg_fail "pg_isready not found: install PostgreSQL's client tools (apt-get install postgresql-client)" || return 1

  if [ -n "${CALLCAT_TEST_POSTGRES_URL:-}" ]; then
    pg_isready -q -t 10 -d "$CALLCAT_TEST_POSTGRES_URL" ||
      _pg_fail "CALLCAT_TEST_POSTGRES_URL is set but that server is not accepting connections" || return 1
    echo "postgres: using the preset CALLCAT_TEST_POSTGRES_URL"
    export CALLCAT_TEST_POSTGRES_URL
    return 0
  fi

  local host=127.0.0.1 port=5432
  if ! pg_isready -q -h "$host" -p "$port"; then
    echo "postgres: not running on $host:$port; starting the local cluster"
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    [ -n "$version" ] && command -v pg_ctlcluster >/dev/null 2>&1 ||
      _pg_fail "no local PostgreSQL cluster (/etc/postgresql is empty or pg_ctlcluster is missing)" || return 1
    pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
      _pg_fail "pg_ctlcluster $version main start failed" || return 1
    local i
    for i in $(seq 1 30); do
      pg_isready -q -h "$host" -p "$port" && break
      sleep 1
    done
    pg_isready -q -h "$host" -p "$port" ||
      _pg_fail "started the cluster but $host:$port is still not accepting connections" || return 1
  fi

  local exists
  exists=$(psql -X -h "$host" -p "$port" -U postgres -d postgres -Atc \
    "SELECT 1 FROM pg_database WHERE datname = 'test'") ||
    _pg_fail "cannot log in as postgres on $host:$port (trust auth expected)" || return 1
  if [ "$exists" != 1 ]; then
    createdb -h "$host" -p "$port" -U postgres test ||
      _pg_fail "could not create database test" || return 1
  fi

  export CALLCAT_TEST_POSTGRES_URL="postgres://postgres@$host:$port/test"
  echo "postgres: ready at $CALLCAT_TEST_POSTGRES_URL"
}
