#!/bin/bash
# Throughput of one node against two nodes sharing one mailbox store, on
# this machine: N messages delivered to one node, then N split over two
# (N/2 each, at once); each run is timed from the first connection until
# the last message is in the Maildir (accepted, spooled, delivered).
#   bench/two-nodes.sh [N] [CONC] [ROUNDS]
# (defaults 2000 messages, 8 at once, 3 rounds; N at most 20000, ROUNDS at
# most 9).  Each round runs one node, then two, right after each other, so
# that the machine's other load moves both alike.
# Needs build/release/posthorn and build/bench/phload (make release phload).
# The nodes listen on 127.0.0.2 and 127.0.0.3; each has its own spool and
# both share mail/ and users under a temporary folder, removed at the end.
# It runs inside its own loopback-only network namespace (bench/netns.sh).
# Every process started here is stopped by PID; every wait is bounded.
# Prints one line per run, the ratio (two nodes / one node) of each round,
# and the median of the rounds' ratios.
set -euo pipefail
. "$(dirname "$0")/netns.sh"
bench_in_netns "$@"   # loopback only, from here on
n=${1:-2000}
conc=${2:-8}
rounds=${3:-3}
[[ $n =~ ^[0-9]+$ && $n -ge 2 && $n -le 20000 ]] || { echo "two-nodes: N must be 2..20000" >&2; exit 2; }
[[ $conc =~ ^[0-9]+$ && $conc -ge 1 && $conc -le 256 ]] || { echo "two-nodes: CONC must be 1..256" >&2; exit 2; }
[[ $rounds =~ ^[0-9]+$ && $rounds -ge 1 && $rounds -le 9 ]] || { echo "two-nodes: ROUNDS must be 1..9" >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
bin="$top/build/release/posthorn"
phload="$top/build/bench/phload"
[ -x "$bin" ] && [ -x "$phload" ] || { echo "two-nodes: run 'make release phload' first" >&2; exit 1; }
. "$(dirname "$0")/nodes.sh"
nodes_begin two-nodes

conf() { # node address port -> configuration file
    local node=$1 addr=$2 port=$3
    mkdir -p "$work/$node"
    cat >"$work/$node/posthorn.conf" <<EOF
hostname $node.bench.test
domains bench.test
spool $work/$node/spool
mailboxes $work/mail
users $work/users

server mx {
    listen $addr:$port
    hostname $node.bench.test
    auth {
        anonymous yes
    }
}
EOF
    echo "$work/$node/posthorn.conf"
}

start() { # conf -> PID once ready (bounded)
    local c=$1 log=${1%.conf}.log
    "$bin" serve -c "$c" >"$log" 2>&1 &
    local p=$!
    pids+=("$p")
    for _ in $(seq 200); do
        grep -q 'event=ready' "$log" && { echo "$p"; return; }
        sleep 0.05
    done
    echo "two-nodes: $c not ready" >&2; exit 1
}

delivered() { find "$work/mail" \( -path '*/new/*' -o -path '*/cur/*' \) -type f 2>/dev/null | wc -l; }

wait_delivered() { # count, deadline in seconds
    local want=$1 end=$((SECONDS + $2))
    while [ "$(delivered)" -lt "$want" ]; do
        [ $SECONDS -lt $end ] || { echo "two-nodes: only $(delivered) of $want delivered" >&2; exit 1; }
        sleep 0.02
    done
}

mkdir -p "$work/mail"
ca=$(conf a 127.0.0.2 "$(free_port 127.0.0.2)")
cb=$(conf b 127.0.0.3 "$(free_port 127.0.0.3)")
echo "u-Bench-Secret-1" | "$bin" user add u@bench.test -c "$ca" >/dev/null
port_a=$(awk '/listen/ {split($2, a, ":"); print a[2]}' "$ca")
port_b=$(awk '/listen/ {split($2, a, ":"); print a[2]}' "$cb")
start "$ca" >/dev/null
start "$cb" >/dev/null

run() { # label, then HOST PORT COUNT triples run at once
    local label=$1; shift
    local before t0 t1 total=0
    before=$(delivered)
    t0=$(date +%s.%N)
    local lp=()
    while [ $# -gt 0 ]; do
        "$phload" tx -c "$conc" -n "$3" -T 300 "$1" "$2" >"$work/$label-$1.out" &
        lp+=($!)
        total=$((total + $3))
        shift 3
    done
    for p in "${lp[@]}"; do wait "$p"; done
    wait_delivered $((before + total)) 300
    t1=$(date +%s.%N)
    python3 -c 'import sys; t=float(sys.argv[2])-float(sys.argv[1]); n=int(sys.argv[3]); print(f"{sys.argv[4]}: {n} messages in {t:.2f}s = {n/t:.0f} msg/s")' \
        "$t0" "$t1" "$total" "$label"
}

run warmup 127.0.0.2 "$port_a" 200 >/dev/null
rate() { sed -E 's/.*= ([0-9]+) msg\/s/\1/' <<<"$1"; }
ratios=()
for r in $(seq "$rounds"); do
    one=$(run "one-node-$r" 127.0.0.2 "$port_a" "$n")
    echo "$one"
    two=$(run "two-nodes-$r" 127.0.0.2 "$port_a" $((n / 2)) 127.0.0.3 "$port_b" $((n - n / 2)))
    echo "$two"
    ratio=$(python3 -c 'import sys; print(f"{int(sys.argv[2]) / int(sys.argv[1]):.2f}")' "$(rate "$one")" "$(rate "$two")")
    echo "round $r: ratio two/one $ratio"
    ratios+=("$ratio")
done
python3 -c 'import statistics, sys; r = sys.argv[1:]; print(f"ratio two/one: median {statistics.median(map(float, r)):.2f} of {len(r)} rounds ({chr(32).join(r)})")' "${ratios[@]}"
