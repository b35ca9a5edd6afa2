#!/bin/bash
# Dovecot's imaptest stress run against two nodes sharing one mailbox
# store at once: the same 20 users (test1..test20@bench.test) through
# both nodes, so that sessions on the two nodes change the same folders.
#   bench/imaptest-two-nodes.sh STRESS_SH [SECS]    (SECS default 30, at most 60)
# STRESS_SH is imaptest's bounded stress wrapper (stress.sh HOST PORT
# USERFMT PASS SECS, which builds imaptest first).  Needs
# build/release/posthorn (make release).  The nodes listen on 127.0.0.2
# and 127.0.0.3 with their own spools and the shared mail/ and users under
# a temporary folder, removed at the end; every process started here is
# stopped by PID; it runs inside its own loopback-only network namespace
# (bench/netns.sh).  Prints each node's stress summary, then checks every
# folder's UID list (unique, increasing UIDs; every message file listed).
set -euo pipefail
. "$(dirname "$0")/netns.sh"
bench_in_netns "$@"   # loopback only, from here on
stress=${1:?usage: bench/imaptest-two-nodes.sh STRESS_SH [SECS]}
secs=${2:-30}
top=$(cd "$(dirname "$0")/.." && pwd)
bin="$top/build/release/posthorn"
[ -x "$bin" ] || { echo "imaptest-two-nodes: run 'make release' first" >&2; exit 1; }
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
IMAPTEST_LOG="$work/stress-a.log" "$stress" 127.0.0.2 "$pa" 'test%d@bench.test' "$pass" "$secs" >"$work/a.out" 2>&1 &
sa=$!
# the second waits until the first has built imaptest and written its mbox
for _ in $(seq 600); do grep -q '^run:' "$work/a.out" 2>/dev/null && break; sleep 0.1; done
IMAPTEST_LOG="$work/stress-b.log" "$stress" 127.0.0.3 "$pb" 'test%d@bench.test' "$pass" "$secs" >"$work/b.out" 2>&1 &
sb=$!
rc=0
wait "$sa" || rc=1
wait "$sb" || rc=1
echo "== node a (127.0.0.2)"; cat "$work/a.out"
echo "== node b (127.0.0.3)"; cat "$work/b.out"
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
