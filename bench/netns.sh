# Sourced by bench scripts: bench_in_netns "$@" runs the calling script
# again inside a private network namespace of its own that has only the
# loopback interface (127.0.0.0/8, so 127.0.0.2 and 127.0.0.3 are there
# too) and a resolv.conf naming 127.0.0.1: nothing the benchmark starts can
# reach another machine or the machine's own resolver.  As root.  The
# namespace is deleted when the script ends; its exit status is kept.
bench_in_netns() {
    [ -n "${POSTHORN_BENCH_NS:-}" ] && return 0
    [ "$(id -u)" -eq 0 ] || { echo "$(basename "$0"): run as root (network namespace)" >&2; exit 1; }
    local ns="phbench-$$" rc=0
    ip netns add "$ns"
    mkdir -p "/etc/netns/$ns"
    echo "nameserver 127.0.0.1" > "/etc/netns/$ns/resolv.conf"   # ip netns exec mounts it
    ip -n "$ns" link set lo up
    POSTHORN_BENCH_NS="$ns" ip netns exec "$ns" "$0" "$@" || rc=$?
    ip netns del "$ns"
    rm -rf "/etc/netns/$ns"
    exit "$rc"
}
