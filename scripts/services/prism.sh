# shellcheck shell=bash
# Twilio API mock for callcat-twilio's contract tests: Stoplight Prism serving
# Twilio's own OpenAPI description, vendored with its licence file in
# $ROOT/vendor/twilio/ (twilio_api_v2010.json, twilio_api_v2010.LICENSE).
# Prism validates every request against the spec (a request that does not match
# gets a 422) and answers with examples from it.
#
# Sourced by scripts/test, which provides $ROOT and on_exit. Defines start_prism,
# which exports CALLCAT_TEST_TWILIO_MOCK_URL=http://127.0.0.1:PORT. Prism serves
# the spec's paths at the root (the spec's `servers` entry https://api.twilio.com
# is not a prefix), so the URL is the client's base URL as is.

PRISM_VERSION=5.16.0

start_prism() {
  local prefix="$CALLCAT_CACHE/prism-$PRISM_VERSION"
  local bin="$prefix/node_modules/.bin/prism"
  local spec="$ROOT/vendor/twilio/twilio_api_v2010.json"
  local installed=""
  if [ -f "$prefix/node_modules/@stoplight/prism-cli/package.json" ]; then
    installed=$(node -p "require('$prefix/node_modules/@stoplight/prism-cli/package.json').version" 2>/dev/null || true)
  fi
  if [ "$installed" != "$PRISM_VERSION" ] || [ ! -x "$bin" ]; then
    echo "installing @stoplight/prism-cli@$PRISM_VERSION into $prefix"
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
      "@stoplight/prism-cli@$PRISM_VERSION" >&2 || { echo "npm install of prism failed" >&2; return 1; }
  fi
  [ -f "$spec" ] || { echo "Twilio spec not found at $spec" >&2; return 1; }

  # A free loopback port, chosen by the kernel.
  local port
  port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
  local log="$prefix/prism-$port.log"
  "$bin" mock --host 127.0.0.1 --port "$port" "$spec" >"$log" 2>&1 &
  local pid=$!
  on_exit "kill $pid 2>/dev/null; wait $pid 2>/dev/null"

  # The 1.8 MB spec takes a few seconds to load; wait up to 120 s, polling.
  local url="http://127.0.0.1:$port"
  local deadline=$((SECONDS + 120))
  until curl -s -o /dev/null "$url/2010-04-01/Accounts/AC00000000000000000000000000000000/Calls/CA00000000000000000000000000000000.json"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "prism exited during start-up; its log:" >&2; cat "$log" >&2; return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "prism did not answer within 120 s; its log:" >&2; cat "$log" >&2; return 1
    fi
    sleep 0.5
  done
  export CALLCAT_TEST_TWILIO_MOCK_URL="$url"
  echo "prism $PRISM_VERSION (pid $pid) serving the Twilio spec at $url"
}
