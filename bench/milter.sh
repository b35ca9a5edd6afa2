#!/bin/bash
# What a content filter costs: the accept rate of posthorn's MX (messages
# per second answered 250, phload) with rspamd in the path as a milter,
# against the same server without it; then the headers of one message
# delivered through rspamd.  rspamd runs with a configuration of its own
# (local rules and milter_headers only: no DNS lists, no Redis), both in a
# private network namespace that has only loopback (bench/netns.sh).
#   usage: bench/milter.sh [COUNT] [CONC]     (as root; default 400 messages, 8 at once)
# Bounded: COUNT messages per run, phload's -T 120 s, rspamd's start 60 s.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/netns.sh
. "$top/bench/netns.sh"
bench_in_netns "$@"
count=${1:-400}
conc=${2:-8}
bin=${POSTHORN_BIN:-$top/build/release/posthorn}
phload=$top/build/bench/phload
[ -x "$bin" ] || make -C "$top" release >/dev/null
[ -x "$phload" ] || make -C "$top" build/bench/phload >/dev/null
dir=$(mktemp -d)
ph="" rs=""
stop() { # by PID, only what this script started
    if [ -n "$1" ]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi
}
cleanup() {
    stop "$ph"
    stop "$rs"
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# ---- rspamd ------------------------------------------------------------------
mkdir -p "$dir/rspamd/db" "$dir/rspamd/tmp" "$dir/rspamd/hs"
printf 'com\nnet\norg\ntest\n' > "$dir/rspamd/tld.dat"
cat > "$dir/rspamd/rspamd.conf" <<CONF
options {
    pidfile = "$dir/rspamd/rspamd.pid";
    dbdir = "$dir/rspamd/db";
    tempdir = "$dir/rspamd/tmp";
    hs_cache_dir = "$dir/rspamd/hs";
    filters = "";
    url_tld = "$dir/rspamd/tld.dat";
    dns { nameserver = ["127.0.0.1:53"]; timeout = 1s; retransmits = 1; }
}
logging { type = "file"; filename = "$dir/rspamd/rspamd.log"; level = "warning"; }
worker "normal" { bind_socket = "127.0.0.1:11333"; count = 1; }
worker "rspamd_proxy" {
    bind_socket = "127.0.0.1:11332";
    milter = yes;
    timeout = 30s;
    count = 1;
    upstream "local" { default = yes; self_scan = yes; }
    spam_header = "X-Spam";
}
lua = "/usr/share/rspamd/rules/rspamd.lua";
modules { path = "/usr/share/rspamd/plugins"; }
actions { reject = 15; add_header = 6; greylist = null; }
milter_headers {
    use = ["x-spamd-result", "x-rspamd-queue-id", "x-spam-status"];
    skip_local = false;
    skip_authenticated = false;
}
CONF
rspamd -f -i -c "$dir/rspamd/rspamd.conf" >"$dir/rspamd/stdout" 2>&1 &
rs=$!
for _ in $(seq 1 120); do
    curl -s -m 1 http://127.0.0.1:11333/ping 2>/dev/null | grep -q pong && break
    sleep 0.5
done
curl -s -m 1 http://127.0.0.1:11333/ping | grep -q pong || { echo "rspamd did not start" >&2; exit 1; }

# ---- posthorn, without and with the milter -----------------------------------
run() { # $1: label, $2: extra lines of the server block
    rm -rf "$dir/spool" "$dir/mail"
    cat > "$dir/posthorn.conf" <<CONF
hostname bench.test
domains bench.test
spool $dir/spool
mailboxes $dir/mail
users $dir/users
dns 127.0.0.1:53
server mx {
    listen 127.0.0.1:2525
    auth { anonymous yes }
    limits { connections-per-ip 1000 }
$2
}
CONF
    [ -f "$dir/users" ] || echo "bench-password" | "$bin" -c "$dir/posthorn.conf" user add u@bench.test >/dev/null
    "$bin" serve -c "$dir/posthorn.conf" 2>"$dir/posthorn-$1.log" &
    ph=$!
    for _ in $(seq 1 100); do grep -q "event=ready" "$dir/posthorn-$1.log" && break; sleep 0.1; done
    out=$("$phload" tx -c "$conc" -n "$count" -s 2000 -T 120 -d bench.test 127.0.0.1 2525)
    echo "$1: $out"
    rate=$(echo "$out" | sed -n 's/.* rate=\([0-9.]*\).*/\1/p')
    ok=$(echo "$out" | sed -n 's/^ok=\([0-9]*\).*/\1/p')
    for _ in $(seq 1 300); do # delivery, at most 30 s more: not part of the rate
        [ "$(find "$dir/mail" -type f -path '*/new/*' 2>/dev/null | wc -l)" -ge "$ok" ] && break
        sleep 0.1
    done
    stop "$ph"; ph=""
    echo "$rate" > "$dir/rate-$1"
}
echo "posthorn-bench milter: $count messages of 2000 bytes, $conc at once, rspamd $(rspamd --version 2>/dev/null | sed -n 's/.*version //p')"
run plain ""
run rspamd "    milter rspamd {
        socket inet:127.0.0.1:11332
        timeout 30s
        on-failure tempfail
    }
    junk-header X-Spam yes"
awk -v a="$(cat "$dir/rate-rspamd")" -v b="$(cat "$dir/rate-plain")" \
    'BEGIN { if (b > 0) printf "ratio with/without rspamd: %.3f\n", a / b; else print "no rate without rspamd" }'
msg=$(find "$dir/mail" -type f -path '*/new/*' | head -1)
if [ -n "$msg" ]; then
    echo "one message delivered through rspamd, its header:"
    sed '/^$/q' "$msg"
fi
