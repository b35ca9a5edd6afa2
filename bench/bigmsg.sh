#!/bin/bash
# The large-message rows alone, for working on the DATA and delivery paths:
#   bench/bigmsg.sh tput [ROUNDS]   100 KiB at c=10 and c=100, 1 KiB at c=10:
#                                   posthorn, Postfix and smtp-sink alternating;
#                                   BEFORE=path/to/posthorn adds that build as
#                                   "before", on its own file system, same run
#   bench/bigmsg.sh cpu [SIZE] [N] [ROUNDS]  server CPU time (user + system, all
#                                   threads, delivery included) per message of
#                                   SIZE bytes (default 102400, 800 messages at
#                                   c=10), with BEFORE=... beside it, alternating
#   bench/bigmsg.sh perf [SIZE] [N] perf record -g of the release daemon under
#                                   smtp-source at c=10 (default 102400, 800);
#                                   the report goes to PERF_OUT (default
#                                   /tmp/bigmsg-perf.txt)
#   bench/bigmsg.sh strace [SIZE] [N] the same under strace -c -f (STRACE_OUT)
#   bench/bigmsg.sh cg [SIZE] [N]   instructions per message (callgrind; CGBIN= another build) of N
#                                   messages of SIZE bytes (default 102400, 50),
#                                   accept and delivery
# As root, in a private network namespace (loopback only) with each server
# on its own new ext4 file system, as bench/run.sh does; every process
# started here is stopped by PID, every wait is bounded.  Needs
# `make release phload` (and build/bench/posthorn-callgrind for cg).
set -euo pipefail
mode=${1:-tput}
top=$(cd "$(dirname "$0")/.." && pwd)
bin="$top/build/release/posthorn"
cgbin=${CGBIN:-$top/build/bench/posthorn-callgrind}
phload="$top/build/bench/phload"
[ "$(id -u)" -eq 0 ] || { echo "bigmsg: run as root" >&2; exit 1; }
ns=phbig-$$
D=$(mktemp -d /tmp/phbig.XXXXXX)
chmod 755 "$D"
NS=(ip netns exec "$ns")
PIDS=(); MOUNTS=()
PH_PORT=2525; PF_PORT=2526; SINK_PORT=2527; PB_PORT=2528

stop_pid() {
    local p=$1 i
    kill -TERM "$p" 2>/dev/null || return 0
    for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
cleanup() {
    set +e
    local p m
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    for m in "${MOUNTS[@]}"; do  # Postfix's children may take a moment to go
        for p in $(seq 50); do umount "$m" 2>/dev/null && break; sleep 0.1; done
        rm -f "$m.img"
    done
    ip netns del "$ns" 2>/dev/null
    rm -rf "/etc/netns/$ns" "$D"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
wait_port() {
    local i
    for i in $(seq 200); do
        "${NS[@]}" ss -Hltn "sport = :$1" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    echo "bigmsg: nothing listens on port $1" >&2; return 1
}
server_dir() {
    mkdir -p "$1"; truncate -s 2G "$1.img"
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$1.img"
    mount -o loop "$1.img" "$1"; MOUNTS+=("$1"); chmod 755 "$1"
}

ip netns add "$ns"
"${NS[@]}" ip link set lo up
mkdir -p "/etc/netns/$ns"
echo "nameserver 127.0.0.1" > "/etc/netns/$ns/resolv.conf"
"${NS[@]}" /usr/sbin/dnsmasq --no-daemon --no-resolv --conf-file=/dev/null --port=53 \
    --listen-address=127.0.0.1 --bind-interfaces --user=root --local=/#/ \
    --local-ttl=300 --pid-file= >"$D/dnsmasq.log" 2>&1 &
PIDS+=($!)

PH="$D/posthorn"; server_dir "$PH"
cat > "$PH/posthorn.conf" <<CONF
hostname  bench.test
domains   bench.test
spool     $PH/spool
mailboxes $PH/mail
users     $PH/users
dns       127.0.0.1
server mx {
    listen 127.0.0.1:$PH_PORT
    auth { anonymous yes }
    limits {
        message-size       20M
        connections        1000
        connections-per-ip 1000
    }
}
CONF
echo "bench-password" | "$bin" -c "$PH/posthorn.conf" user add "u@bench.test" >/dev/null
count_new() { local d="$PH/mail/bench.test/u/new"; [ -d "$d" ] && ls -f "$d" | grep -vc '^\.' || echo 0; }

if [ "$mode" = cg ]; then
    size=${2:-102400}; n=${3:-50}
    "${NS[@]}" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$D/cg.out" \
        "$cgbin" serve -c "$PH/posthorn.conf" 2>"$D/valgrind.log" &
    vp=$!; PIDS+=("$vp")
    for i in $(seq 900); do grep -q 'event=ready' "$D/valgrind.log" && break; sleep 0.1; done
    (cd "$D" && callgrind_control -i on "$vp" >/dev/null)
    "${NS[@]}" timeout 300 "$phload" tx -c 1 -n "$n" -s "$size" -T 250 127.0.0.1 $PH_PORT >&2
    for i in $(seq 1200); do
        [ "$(count_new)" -ge "$n" ] && [ "$(find "$PH/spool/queue" -type f | wc -l)" -eq 0 ] && break
        sleep 0.1
    done
    (cd "$D" && callgrind_control -i off "$vp" >/dev/null)
    stop_pid "$vp"
    ir=$(callgrind_annotate "$D/cg.out" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }' || true)
    echo "instructions per $size-byte message: $((ir / n)) (delivered $(count_new) of $n)"
    [ -z "${CG_KEEP:-}" ] || cp "$D/cg.out" "$CG_KEEP"
    exit 0
fi

if [ "$mode" = perf ] || [ "$mode" = strace ]; then
    size=${2:-102400}; n=${3:-800}
    if [ "$mode" = perf ]; then wrap=(perf record -g -o "$D/perf.data" --)
    else wrap=(strace -c -f -o "${STRACE_OUT:-/tmp/bigmsg-strace.txt}"); fi
    "${NS[@]}" "${wrap[@]}" "$bin" serve -c "$PH/posthorn.conf" 2>>"$PH/log" &
    pp=$!; PIDS+=("$pp"); wait_port $PH_PORT
    t0=$(date +%s.%N)
    "${NS[@]}" timeout 300 smtp-source -s 10 -m "$n" -l "$size" -f load@client.test \
        -t u@bench.test 127.0.0.1:$PH_PORT
    t1=$(date +%s.%N)
    for i in $(seq 1200); do [ "$(count_new)" -ge "$n" ] && break; sleep 0.1; done
    echo "$n $t0 $t1" | awk '{ printf "%.0f msg/s under perf\n", $1 / ($3 - $2) }'
    child=$(cat "/proc/$pp/task/$pp/children" 2>/dev/null | awk '{ print $1 }')
    [ -z "$child" ] || stop_pid "$child"
    for i in $(seq 100); do kill -0 "$pp" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$pp"
    [ "$mode" = perf ] || exit 0
    { perf report -i "$D/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null
      perf report -i "$D/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null; } |
        grep -v -e '^#' -e '^$' | awk '$1 + 0 >= 0.3' > "${PERF_OUT:-/tmp/bigmsg-perf.txt}"
    # the system calls and threads, with what they call
    { echo "by system call (with callees):"
      perf report -i "$D/perf.data" --children --sort sym --stdio -g none 2>/dev/null |
        grep -E '__(x64|do)_sys_|ret_from_fork|worker_thread' | head -25
      echo "by thread:"
      perf report -i "$D/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null |
        grep -v -e '^#' -e '^$'; } >> "${PERF_OUT:-/tmp/bigmsg-perf.txt}"
    exit 0
fi

PF="$D/postfix"; server_dir "$PF"
mkdir -p "$PF/etc" "$PF/queue" "$PF/data" "$PF/mail"
chown postfix:postfix "$PF/data" "$PF/mail"
cat > "$PF/etc/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = pf.bench.test
mydomain = bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
virtual_mailbox_domains = bench.test
virtual_mailbox_base = $PF/mail
virtual_mailbox_maps = texthash:$PF/etc/vmailbox
virtual_uid_maps = static:$(id -u postfix)
virtual_gid_maps = static:$(id -g postfix)
maillog_file_prefixes = $PF
maillog_file = $PF/maillog
smtpd_client_connection_count_limit = 0
default_process_limit = 250
CONF
echo "u@bench.test bench.test/u/" > "$PF/etc/vmailbox"
sed -n '/^cat > "\$PF\/etc\/master.cf"/,/^CONF$/p' "$top/bench/run.sh" | sed '1d;$d' |
    sed 's/\$PF_PORT/'"$PF_PORT/" > "$PF/etc/master.cf"
"${NS[@]}" postfix -c "$PF/etc" check >"$PF/check.log" 2>&1 || { cat "$PF/check.log" >&2; exit 1; }

"${NS[@]}" "$bin" serve -c "$PH/posthorn.conf" 2>>"$PH/log" & PIDS+=($!); wait_port $PH_PORT
PH_PID=$!
SERVERS=(posthorn postfix sink)
if [ -n "${BEFORE:-}" ]; then  # an earlier build beside it: same config, its own port and disk
    PB="$D/before"; server_dir "$PB"
    sed -e "s|$PH|$PB|g" -e "s|:$PH_PORT|:$PB_PORT|" "$PH/posthorn.conf" > "$PB/posthorn.conf"
    echo "bench-password" | "$BEFORE" -c "$PB/posthorn.conf" user add "u@bench.test" >/dev/null
    "${NS[@]}" "$BEFORE" serve -c "$PB/posthorn.conf" 2>>"$PB/log" & PIDS+=($!); wait_port $PB_PORT
    PB_PID=$!
    SERVERS=(before posthorn postfix sink)
fi
if [ "$mode" = cpu ]; then
    size=${2:-102400}; n=${3:-800}; rounds=${4:-3}
    cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
    delivered() { local d="$1/mail/bench.test/u/new"; [ -d "$d" ] && ls -f "$d" | grep -vc '^\.' || echo 0; }
    echo "bigmsg: load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    for round in $(seq "$rounds"); do
        for s in ${BEFORE:+before} posthorn; do
            if [ "$s" = before ]; then pid=$PB_PID dir=$PB port=$PB_PORT; else pid=$PH_PID dir=$PH port=$PH_PORT; fi
            got0=$(delivered "$dir"); t0=$(cpu_ticks "$pid")
            "${NS[@]}" timeout 300 smtp-source -s 10 -m "$n" -l "$size" -f load@client.test \
                -t u@bench.test 127.0.0.1:$port >>"$D/source.log" 2>&1 || echo "bigmsg: $s failed" >&2
            for i in $(seq 1200); do [ $(( $(delivered "$dir") - got0 )) -ge "$n" ] && break; sleep 0.1; done
            sleep 0.5   # the checkpoint after the burst
            t1=$(cpu_ticks "$pid")
            echo "$s: $(echo "$t0 $t1 $n $(getconf CLK_TCK)" |
                awk '{ printf "%.3f", ($2 - $1) / $4 * 1000 / $3 }') ms CPU per $size-byte message"
        done
    done
    echo "bigmsg: load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    exit 0
fi
"${NS[@]}" /usr/lib/postfix/sbin/master -c "$PF/etc" -d >>"$PF/master.log" 2>&1 & PIDS+=($!)
wait_port $PF_PORT
"${NS[@]}" smtp-sink -u postfix 127.0.0.1:$SINK_PORT 1024 >"$D/sink.log" 2>&1 & PIDS+=($!)
wait_port $SINK_PORT

queue_empty() {
    case $1 in
    posthorn) [ "$(find "$PH/spool/queue" -type f | wc -l)" -eq 0 ] ;;
    before) [ "$(find "$PB/spool/queue" -type f | wc -l)" -eq 0 ] ;;
    postfix) [ "$(find "$PF/queue/incoming" "$PF/queue/active" "$PF/queue/deferred" \
                  -type f 2>/dev/null | wc -l)" -eq 0 ] ;;
    *) true ;;
    esac
}
port_of() {
    case $1 in posthorn) echo $PH_PORT ;; before) echo $PB_PORT ;; postfix) echo $PF_PORT ;;
    sink) echo $SINK_PORT ;; esac
}
rounds=${2:-1}
echo "bigmsg: load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for round in $(seq "$rounds"); do
    for row in "10 800 102400" "100 1000 102400" "10 3000 1024"; do
        read -r c n size <<<"$row"
        line="c=$c $((size / 1024))KiB"
        declare -A rate=()
        for s in "${SERVERS[@]}"; do
            for i in $(seq 3000); do queue_empty "$s" && break; sleep 0.1; done
            t0=$(date +%s.%N)
            "${NS[@]}" timeout 300 smtp-source -s "$c" -m "$n" -l "$size" -f load@client.test \
                -t u@bench.test 127.0.0.1:"$(port_of "$s")" >>"$D/source.log" 2>&1 ||
                { echo "bigmsg: smtp-source against $s failed:" >&2; tail -3 "$D/source.log" >&2; }
            t1=$(date +%s.%N)
            rate[$s]=$(echo "$n $t0 $t1" | awk '{ printf "%.0f", $1 / ($3 - $2) }')
            line+=" $s=${rate[$s]}"
        done
        line+=" posthorn/postfix=$(echo "${rate[posthorn]} ${rate[postfix]}" | awk '{ printf "%.2f", $1 / $2 }')"
        line+=" posthorn/sink=$(echo "${rate[posthorn]} ${rate[sink]}" | awk '{ printf "%.2f", $1 / $2 }')"
        [ -z "${BEFORE:-}" ] ||
            line+=" before/postfix=$(echo "${rate[before]} ${rate[postfix]}" | awk '{ printf "%.2f", $1 / $2 }')"
        echo "$line"
    done
done
echo "bigmsg: load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
