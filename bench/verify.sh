#!/bin/bash
# The cost of sender verification on the MX path: the same phload run
# against posthorn without verification, with `verify { spf yes  dmarc
# enforce }` and with `verify { spf yes  dkim yes  dmarc enforce }`,
# alternating, and the ratios of their throughputs to the first.  Every
# message is the same one, signed by `posthorn dkim sign` with an RSA 2048
# and an Ed25519 key (two signatures to verify).  The sender's SPF, DKIM
# and DMARC records come from a private dnsmasq (records with a 300 s TTL,
# as real zones have; posthorn caches them).
#   bench/verify.sh [COUNT] [CONCURRENCY] [ROUNDS]   (default 2000 20 3)
# Needs build/release/posthorn and build/bench/phload (make release phload).
# Everything runs on 127.0.0.1 under a temporary folder; every process
# started here is stopped by PID; every wait is bounded.
set -euo pipefail
count=${1:-2000}
conc=${2:-20}
rounds=${3:-3}
top=$(cd "$(dirname "$0")/.." && pwd)
bin="$top/build/release/posthorn"
phload="$top/build/bench/phload"
[ -x "$bin" ] && [ -x "$phload" ] || { echo "bench: run 'make release phload' first" >&2; exit 1; }

D=$(mktemp -d /tmp/phverify.XXXXXX)
PIDS=()
stop_pid() {  # TERM, 5 s, KILL
    local p=$1 i
    kill -TERM "$p" 2>/dev/null || return 0
    for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
cleanup() {
    set +e
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    rm -rf "$D"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {  # bounded: 10 s
    local i
    for i in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench: nothing listens on port $1" >&2
    exit 1
}

# The message: signed by posthorn with two keys of client.test, made here.
mkdir -p "$D/sign"
: > "$D/sign/users"; chmod 600 "$D/sign/users"
cat > "$D/sign/posthorn.conf" <<CONF
hostname mx.client.test
domains client.test
spool $D/sign/spool
mailboxes $D/sign/mail
users $D/sign/users
server mx {
    listen 127.0.0.1:$(free_port)
}
CONF
key_records=()
for k in "rsa1 rsa" "ed1 ed25519"; do
    read -r sel kind <<<"$k"
    out=$("$bin" -c "$D/sign/posthorn.conf" dkim new client.test "$sel" "$kind")
    sed -n 's/^    \(key .*\)/\1/p' <<<"$out" >> "$D/sign/keys"
    strings=$(grep '_domainkey' <<<"$out" | grep -o '"[^"]*"' | tr -d '"' | paste -sd, -)
    key_records+=("--txt-record=$sel._domainkey.client.test,$strings")
done
printf 'dkim {\n%s\n}\n' "$(sed 's/^/    /' "$D/sign/keys")" >> "$D/sign/posthorn.conf"
{
    printf 'From: Load <load@client.test>\r\nTo: <u@bench.test>\r\nSubject: phload message\r\n'
    printf 'Date: Tue, 8 Dec 2026 10:00:00 +0000\r\nMessage-ID: <phload@client.test>\r\n\r\n'
    for i in $(seq 13); do printf '%076d\r\n' "$i"; done
} > "$D/message.eml"
"$bin" -c "$D/sign/posthorn.conf" dkim sign "$D/message.eml" > "$D/signed.eml"
[ "$(grep -c '^DKIM-Signature:' "$D/signed.eml")" = 2 ] || { echo "bench: signing failed" >&2; exit 1; }

dns_port=$(free_port)
/usr/sbin/dnsmasq --no-daemon --no-resolv --no-hosts --conf-file=/dev/null --port="$dns_port" \
    --listen-address=127.0.0.1 --bind-interfaces --user=root '--local=/#/' --local-ttl=300 \
    "--txt-record=client.test,v=spf1 ip4:127.0.0.0/8 -all" \
    "--txt-record=_dmarc.client.test,v=DMARC1; p=reject" "${key_records[@]}" \
    2>"$D/dnsmasq.log" &
PIDS+=("$!")

run_one() {  # $1: off|spf|dkim -> prints the rate
    local mode=$1 port dir
    port=$(free_port)
    dir="$D/$mode-$RANDOM"
    mkdir -p "$dir/mail"
    : > "$dir/users"; chmod 600 "$dir/users"
    local verify=""
    [ "$mode" = spf ] && verify=$'    verify {\n        spf yes\n        dmarc enforce\n    }'
    [ "$mode" = dkim ] &&
        verify=$'    verify {\n        spf yes\n        dkim yes\n        dmarc enforce\n    }'
    cat > "$dir/posthorn.conf" <<CONF
hostname mx.bench.test
domains bench.test
spool $dir/spool
mailboxes $dir/mail
users $dir/users
dns 127.0.0.1:$dns_port
server mx {
    listen 127.0.0.1:$port
    auth { anonymous yes }
$verify
    limits {
        connections-per-ip 1000
        unknown-recipients 0 1h 1h
    }
}
CONF
    for u in u 2u 3u 4u 5u 6u 7u 8u 9u 10u; do
        echo "bench-password" | "$bin" -c "$dir/posthorn.conf" user add "$u@bench.test" >/dev/null
    done
    "$bin" serve -c "$dir/posthorn.conf" 2>"$dir/log" &
    local pid=$!
    PIDS+=("$pid")
    wait_port "$port"
    local out
    out=$(timeout 300 "$phload" tx -c "$conc" -n "$count" -m "$D/signed.eml" -T 250 \
          -d bench.test 127.0.0.1 "$port" 2>>"$D/phload.log" || true)
    # the daemon's CPU time (user + system, clock ticks) per message: steadier
    # than the throughput on a shared machine
    local ticks cpu_us
    ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    cpu_us=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$count" \
             'BEGIN {printf "%.0f", t * 1000000 / hz / n}')
    stop_pid "$pid"
    if [ "$mode" != off ] && ! grep -q 'event=dmarc .*result=pass' "$dir/log"; then
        echo "bench: the verifying server did not verify (see $dir/log)" >&2
        exit 1
    fi
    if [ "$mode" = dkim ] && [ "$(grep -c 'event=dkim .*result=pass' "$dir/log")" != $((2 * count)) ]; then
        echo "bench: not every signature verified (see $dir/log)" >&2
        exit 1
    fi
    echo "$(echo "$out" | sed -n 's/.*ok=\([0-9]*\).*rate=\([0-9.]*\).*p50_ms=\([0-9.]*\).*p99_ms=\([0-9.]*\).*/\1 \2 \3 \4/p') $cpu_us"
}

echo "verify cost: $count messages of 1.5 KiB with two DKIM signatures, $conc at once, $rounds rounds (release build)"
echo "modes: off (no verify), spf (spf yes, dmarc enforce), dkim (spf yes, dkim yes, dmarc enforce)"
printf '%-6s %-5s %8s %10s %8s %8s %10s\n' round mode ok msgs/s p50_ms p99_ms cpu_us/msg
declare -A rates cpus
for r in $(seq "$rounds"); do
    for mode in off spf dkim; do
        read -r ok rate p50 p99 cpu <<<"$(run_one "$mode")"
        printf '%-6s %-5s %8s %10s %8s %8s %10s\n' "$r" "$mode" "$ok" "$rate" "$p50" "$p99" "$cpu"
        [ "$ok" = "$count" ] || { echo "bench: $mode: only $ok of $count accepted" >&2; exit 1; }
        rates[$mode]+="$rate "
        cpus[$mode]+="$cpu "
    done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# shellcheck disable=SC2086 # the lists are space-separated numbers
off=$(median ${rates[off]}); offc=$(median ${cpus[off]})
for mode in spf dkim; do
    # shellcheck disable=SC2086
    on=$(median ${rates[$mode]}); onc=$(median ${cpus[$mode]})
    awk -v m="$mode" -v on="$on" -v off="$off" -v onc="$onc" -v offc="$offc" 'BEGIN {
        printf "%s: median msgs/s %s (without verify %s), ratio %.2f; daemon CPU per message %s us (without %s us), ratio %.2f\n",
               m, on, off, on / off, onc, offc, onc / offc}'
done
