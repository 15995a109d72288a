# shellcheck shell=bash
# Starts a DynamoDB emulator (moto's server) on a free loopback port for the
# callcat-dynamo tests. Sourced by scripts/test, which provides $ROOT and on_exit.
#
# Why not plain `moto_server`: it serves requests on many threads without a lock
# around DynamoDB operations, so two conditional writes on the same item can both
# pass their condition (real DynamoDB makes each conditional write atomic). The
# claim tests rely on that atomicity, so we run the same moto WSGI app under
# werkzeug with one lock around each request: requests are handled one at a time,
# as atomically as DynamoDB handles each item.

MOTO_VERSION=5.2.5

start_dynamo() {
  local venv="$CALLCAT_CACHE/venv-moto-$MOTO_VERSION"
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
  cat >"$venv/moto_serialized.py" <<'PY'
import os
import sys
import threading

from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)

host, port = sys.argv[1], int(sys.argv[2])
os.environ.setdefault("MOTO_PORT", str(port))
app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()


def serialized(environ, start_response):
    with lock:
        return list(app(environ, start_response))


run_simple(host, port, serialized, threaded=True, request_handler=MotoRequestHandler)
PY
  "$py" "$venv/moto_serialized.py" 127.0.0.1 "$port" >"$log" 2>&1 &
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
