#!/usr/bin/env bash
# Run a command with a real S3-compatible server (moto) on 127.0.0.1, started here and stopped
# when the command ends. The command sees CHUNKCUBE_TEST_S3_ENDPOINT=http://127.0.0.1:PORT.
#   scripts/with-s3.sh cargo test --release --test it s3::
# Needs moto (scripts/setup.sh installs it).
set -euo pipefail
[ "$#" -gt 0 ] || { echo "usage: scripts/with-s3.sh COMMAND [ARGS...]" >&2; exit 2; }
python3 -c 'import moto' 2>/dev/null || { echo "with-s3.sh: moto is missing; run scripts/setup.sh" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
log=$(mktemp)
python3 -m moto.server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true; wait $moto_pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null; then break; fi
    kill -0 $moto_pid 2>/dev/null || { echo "with-s3.sh: moto exited:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.1
done
export CHUNKCUBE_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
"$@"
