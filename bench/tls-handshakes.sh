#!/bin/sh
# TLS handshake cost: full handshakes per second against posthorn's
# implicit-TLS port, measured with `openssl s_time -new` (no session reuse),
# inside a private network namespace that has only loopback.
#   usage: bench/tls-handshakes.sh [SECONDS]     (as root; default 10 s)
set -eu
secs=${1:-10}
top=$(cd "$(dirname "$0")/.." && pwd)
bin="$top/build/release/posthorn"
[ -x "$bin" ] || make -C "$top" release >/dev/null
ns=posthorn-bench-$$
dir=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM
# user + system CPU ticks of a process (fields 14 and 15 of /proc/PID/stat)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up

for kind in ecdsa rsa; do
    if [ "$kind" = rsa ]; then extra="--rsa 2048"; else extra=""; fi
    # shellcheck disable=SC2086
    "$bin" cert new --hostname "bench-$kind.test" --out "$dir/certs" $extra >/dev/null
done
echo "posthorn-bench: $secs s per row, one client process, server on one core"
for kind in ecdsa rsa; do
    cat > "$dir/posthorn.conf" <<CONF
hostname bench.test
domains bench.test
spool $dir/spool
mailboxes $dir/mail
users $dir/users
server tls {
    listen 127.0.0.1:2465 tls
    auth { anonymous yes }
    tls {
        certificate certs/bench-$kind.test.crt
        key         certs/bench-$kind.test.key
    }
}
CONF
    ip netns exec "$ns" taskset -c 0 "$bin" serve -c "$dir/posthorn.conf" 2>"$dir/log" &
    pid=$!
    sleep 1
    for v in tls1_3 tls1_2; do
        c0=$(cpu_ticks "$pid")
        t0=$(date +%s.%N)
        n=$(ip netns exec "$ns" taskset -c 1 timeout $((secs + 10)) openssl s_time \
               -connect 127.0.0.1:2465 -new -$v -time "$secs" 2>/dev/null |
               sed -n 's/^\([0-9]*\) connections in .* real seconds.*/\1/p')
        t1=$(date +%s.%N)
        c1=$(cpu_ticks "$pid")
        echo "$kind $v $n $t0 $t1 $c0 $c1 $(getconf CLK_TCK)" | awk '{
            cpu = ($7 - $6) / $8; wall = $3 / ($5 - $4); per = 0
            if (cpu > 0) per = $3 / cpu
            printf "%-6s %-7s %6d handshakes: %4.0f/s wall clock, server CPU %4.1f s = %4.0f per core-second\n", $1, $2, $3, wall, cpu, per }'
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done
