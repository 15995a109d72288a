# shellcheck shell=bash
# Starts a DynamoDB emulator (moto_server) on a free loopback port for the
# callcat-dynamo tests. Sourced by scripts/test, which provides $ROOT and on_exit.

MOTO_VERSION=5.2.5

start_dynamo() {
  local venv="$ROOT/.venv-moto"
  local py="$venv/bin/python"
  if [ ! -x "$py" ]; then
    python3 -m venv "$venv"
    # Keep the virtualenv out of git whatever the repository's .gitignore says.
    printf '*\n' >"$venv/.gitignore"
  fi
  if [ "$("$py" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" != "$MOTO_VERSION" ]; then
    "$py" -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  fi

  local port
  port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
  local log="$ROOT/target/moto-server.log"
  mkdir -p "$(dirname "$log")"
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
  local pid=$!
  on_exit "kill $pid 2>/dev/null; wait $pid 2>/dev/null"

  local endpoint="http://127.0.0.1:$port"
  local i
  for ((i = 0; i < 100; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "moto_server exited early; its log ($log):" >&2
      cat "$log" >&2
      return 1
    fi
    # Any HTTP answer means it is serving.
    if "$py" -c "import urllib.request,sys
try:
    urllib.request.urlopen('$endpoint/moto-api/', timeout=1)
except urllib.error.HTTPError:
    pass
except Exception:
    sys.exit(1)" 2>/dev/null; then
      export CALLCAT_TEST_DYNAMO_ENDPOINT="$endpoint"
      echo "moto_server $MOTO_VERSION listening on $endpoint (pid $pid, log $log)"
      return 0
    fi
    sleep 0.2
  done
  echo "moto_server did not answer on $endpoint within 20 s; its log ($log):" >&2
  cat "$log" >&2
  return 1
}
