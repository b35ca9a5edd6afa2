# Sourced by the two-node benchmarks: a temporary folder ($work, removed at
# the end), the PIDs of the daemons they start ($pids, each stopped by PID
# with SIGTERM, then SIGKILL after 10 s), and free_port ADDR.
# nodes_begin NAME makes the folder and arms the clean-up.
nodes_begin() {
    work=$(mktemp -d "/tmp/posthorn-$1.XXXXXX")
    pids=()
    trap nodes_cleanup EXIT
}

nodes_cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    rm -rf "$work"
}

free_port() { # a port nothing listens on at $1, from the high range
    python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$1"
}
