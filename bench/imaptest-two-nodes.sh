#!/bin/bash
# Dovecot's imaptest stress run against two nodes sharing one mailbox
# store at once: the same 20 users (test1..test20@bench.test) through
# both nodes, so that sessions on the two nodes change the same folders.
#   bench/imaptest-two-nodes.sh [SECS]    (SECS default 30, at most 60)
# One imaptest per node, each in its stress mode (users=20 clients=10, the
# mbox of third_party/imaptest/mbox.py) for SECS seconds.  Needs
# build/release/posthorn and build/imaptest/imaptest (make release
# imaptest-tool).  The nodes listen on 127.0.0.2 and 127.0.0.3 with their
# own spools and the shared mail/ and users under a temporary folder,
# removed at the end; every process started here is
# stopped by PID; it runs inside its own loopback-only network namespace
# (bench/netns.sh).  Prints each node's imaptest totals, its number of
# Error: lines and their most common kinds, then checks every folder's UID
# list (unique, increasing UIDs; every message file listed).
set -euo pipefail
. "$(dirname "$0")/netns.sh"
bench_in_netns "$@"   # loopback only, from here on
secs=${1:-30}
[[ $secs =~ ^[0-9]+$ && $secs -ge 1 && $secs -le 60 ]] || { echo "imaptest-two-nodes: SECS must be 1..60" >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
bin="$top/build/release/posthorn"
imaptest="$top/build/imaptest/imaptest"
[ -x "$bin" ] && [ -x "$imaptest" ] || { echo "imaptest-two-nodes: run 'make release imaptest-tool' first" >&2; exit 1; }
. "$(dirname "$0")/nodes.sh"
nodes_begin imaptest-nodes
pass="imaptest-Pass-1"

conf() { # node address port
    mkdir -p "$work/$1"
    cat >"$work/$1/posthorn.conf" <<EOC
hostname $1.bench.test
domains bench.test
spool $work/$1/spool
mailboxes $work/mail
users $work/users

server imap {
    protocol imap
    listen $2:$3
    auth {
        plaintext-requires-tls no
    }
}
EOC
    echo "$work/$1/posthorn.conf"
}

start() {
    local log=${1%.conf}.log
    "$bin" serve -c "$1" >"$log" 2>&1 &
    pids+=($!)
    for _ in $(seq 200); do grep -q 'event=ready' "$log" && return; sleep 0.05; done
    echo "imaptest-two-nodes: $1 not ready" >&2; exit 1
}

mkdir -p "$work/mail"
pa=$(free_port 127.0.0.2); pb=$(free_port 127.0.0.3)
ca=$(conf a 127.0.0.2 "$pa"); cb=$(conf b 127.0.0.3 "$pb")
for i in $(seq 20); do echo "$pass" | "$bin" user add "test$i@bench.test" -c "$ca" >/dev/null; done
start "$ca"; start "$cb"
python3 "$top/third_party/imaptest/mbox.py" "$work/stress.mbox"

stress() { # address port log: imaptest's stress mode, bounded by secs (and a timeout)
    (cd "$work" && timeout -k 10 $((secs + 60)) "$imaptest" host="$1" port="$2" \
        user='test%d@bench.test' pass="$pass" users=20 clients=10 secs="$secs" \
        mbox="$work/stress.mbox") >"$3" 2>&1 </dev/null
}

summary() { # log
    grep -q '^Totals:' "$1" || { echo "imaptest did not finish; its last lines:"; tail -5 "$1"; return 1; }
    sed -n '/^Totals:/,$p' "$1" | grep -v '^Error:'
    echo "Error: lines: $(grep -c '^Error:' "$1")"
    grep '^Error:' "$1" | sed -E 's/^Error: [^ ]*\[[0-9]+\]: //; s/\b[0-9]+(\.[0-9]+)?\b/N/g' |
        cut -c1-120 | sort | uniq -c | sort -rn | head -5 || true
}

stress 127.0.0.2 "$pa" "$work/a.log" &
sa=$!
stress 127.0.0.3 "$pb" "$work/b.log" &
sb=$!
rc=0
wait "$sa" || rc=1
wait "$sb" || rc=1
echo "== node a (127.0.0.2)"; summary "$work/a.log" || rc=1
echo "== node b (127.0.0.3)"; summary "$work/b.log" || rc=1
grep -h 'event=mailbox-error' "$work"/a/posthorn.log "$work"/b/posthorn.log | head -5 || true
python3 - "$work/mail" <<'EOP'
import os, re, sys
folders = problems = messages = 0
for d, subs, files in os.walk(sys.argv[1]):
    if "cur" not in subs or "posthorn-uidlist" not in files:
        continue
    folders += 1
    lines = open(os.path.join(d, "posthorn-uidlist"), "rb").read().split(b"\n")
    uids, listed = [], set()
    for l in lines[1:]:
        if l and not l.startswith(b"N"):
            u, _, n = l.partition(b" ")
            uids.append(int(u)); listed.add(n.decode())
    problems += any(b <= a for a, b in zip(uids, uids[1:])) + (len(listed) != len(uids))
    for s in ("new", "cur"):
        for f in os.listdir(os.path.join(d, s)):
            messages += 1
            problems += re.split(r"[,:]", f, 1)[0] not in listed
print(f"store: {folders} folders, {messages} messages, {problems} problems "
      "(after the last sync; a file delivered after it has no UID yet)")
EOP
exit $rc
