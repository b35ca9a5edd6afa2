#!/bin/bash
# posthorn beside Postfix (SMTP) and Dovecot (IMAP), same machine, same
# load, same durability.
#   bench/run.sh quick     (< 2 minutes: one round, small counts)
#   bench/run.sh full      (~20 minutes: three alternating rounds, every row)
#   bench/run.sh smtp      (the SMTP rows of full alone: throughput, submission,
#                           end-to-end, latency, idle memory, TLS handshakes,
#                           fsyncs, instructions; three rounds, ROUNDS may be
#                           given)
#   bench/run.sh imap      (about 15 minutes: the IMAP rows alone, three rounds;
#                           ROUNDS, STRESS_SECS and BIG_N (the big folder's
#                           size, default 100,000) may be given smaller)
# As root.  Everything runs inside a private network namespace that has only
# a loopback interface and its own dnsmasq; servers are private instances
# under a temporary folder.  Every process started here is stopped by PID;
# every wait is bounded.  Results: a table on stdout and a TSV under
# bench/results/.
#
# BENCH_FS=fresh (the default) gives each server its own new ext4 file
# system (mkfs.ext4 defaults, journal included, as on a real server's
# disk) on a loop device backed by a file under /tmp, mounted for the run
# and removed after: neither server's files share inode groups with the
# other's, nor with what earlier runs deleted (on ext4 without a journal,
# as this machine's root file system is, creating a file skips inodes freed
# in the last minutes, which made one server pay for the other's deletes).
# fsync on the loop device reaches the disk (the loop driver syncs the
# backing file).  BENCH_FS=shared runs both in a folder under /tmp on the
# machine's own file system.
set -euo pipefail
mode=${1:-quick}
case "$mode" in quick|full|smtp|imap) ;; *) echo "usage: bench/run.sh quick|full|smtp|imap" >&2; exit 2 ;; esac
top=$(cd "$(dirname "$0")/.." && pwd)
bin="$top/build/release/posthorn"
phload="$top/build/bench/phload"
imaptest="$top/build/imaptest/imaptest"
if ! [ -x "$bin" ] || ! [ -x "$phload" ] || ! [ -x "$imaptest" ]; then
    echo "bench: run 'make release phload imaptest-tool' first" >&2; exit 1
fi
[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (network namespace)" >&2; exit 1; }
# 10,000 idle sessions: as many descriptors in phload (posthorn raises its
# own limit to what its connection limits need, up to the hard limit, which
# root may raise where the machine lets it)
ulimit -n 32768 2>/dev/null || ulimit -Sn "$(ulimit -Hn)"
"$top/bench/install-deps.sh"

ns=phbench-$$
D=$(mktemp -d /tmp/phbench.XXXXXX)
chmod 755 "$D"
results="$top/bench/results"
mkdir -p "$results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
tsv="$results/$mode-$stamp.tsv"
NS=(ip netns exec "$ns")
PIDS=()            # every long-running process started here
MOUNTS=()          # file systems mounted here (BENCH_FS=fresh)
BENCH_FS=${BENCH_FS:-fresh}
case "$BENCH_FS" in fresh|shared) ;; *) echo "bench: BENCH_FS is fresh or shared" >&2; exit 2 ;; esac

PH_PORT=2525; PH_TLS_PORT=2465; PF_PORT=2526; SINK_PORT=2527; SSERVER_PORT=4433
PH_SUB_PORT=2587; PF_SUB_PORT=2588   # submission: STARTTLS, then AUTH
PH_IMAP_PORT=2143; DV_PORT=2144

stop_pid() {  # stop one process we started, bounded: TERM, 5 s, KILL
    local p=$1
    kill -TERM "$p" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
forget_pid() { local p=$1 x keep=(); for x in "${PIDS[@]}"; do [ "$x" = "$p" ] || keep+=("$x"); done; PIDS=("${keep[@]}"); }
cleanup() {
    set +e
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    for m in "${MOUNTS[@]}"; do umount "$m" && rm -f "$m.img"; done
    ip netns del "$ns" 2>/dev/null
    rm -rf "/etc/netns/$ns"
    [ -n "${KEEP:-}" ] || rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {  # wait (bounded, 20 s) until something listens on 127.0.0.1:$1 in the namespace
    local _
    for _ in $(seq 200); do
        "${NS[@]}" ss -Hltn "sport = :$1" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    echo "bench: nothing listens on port $1" >&2; return 1
}

# ---- the namespace: loopback only, dnsmasq answering from /etc/hosts -------
ip netns add "$ns"
"${NS[@]}" ip link set lo up
mkdir -p "/etc/netns/$ns"
echo "nameserver 127.0.0.1" > "/etc/netns/$ns/resolv.conf"   # ip netns exec mounts it
# answers from /etc/hosts (127.0.0.1 is localhost) with a TTL, as real records
# have: posthorn caches them; Postfix reads /etc/hosts itself (nsswitch)
"${NS[@]}" /usr/sbin/dnsmasq --no-daemon --no-resolv --conf-file=/dev/null --port=53 \
    --listen-address=127.0.0.1 --bind-interfaces --user=root --local=/#/ \
    --local-ttl=300 --pid-file= >"$D/dnsmasq.log" 2>&1 &
PIDS+=($!)

# ---- posthorn -----------------------------------------------------------------
# A folder for one server: on its own new ext4 (BENCH_FS=fresh) or not.
server_dir() {
    mkdir -p "$1"
    [ "$BENCH_FS" = fresh ] || return 0
    truncate -s 4G "$1.img"
    # inode tables and journal written now, not by a kernel thread mid-run
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$1.img"
    mount -o loop "$1.img" "$1"
    MOUNTS+=("$1")
    chmod 755 "$1"
}
PH="$D/posthorn"
server_dir "$PH"
"$bin" cert new --hostname bench.test --out "$PH/certs" >/dev/null
cat > "$PH/posthorn.conf" <<CONF
hostname  bench.test
domains   bench.test
spool     $PH/spool
mailboxes $PH/mail
users     $PH/users
dns       127.0.0.1
server mx {
    listen 127.0.0.1:$PH_PORT
    listen 127.0.0.1:$PH_TLS_PORT tls
    auth { anonymous yes }
    tls {
        certificate certs/bench.test.crt
        key         certs/bench.test.key
    }
    limits {
        message-size       20M
        recipients         100
        connections        11000
        connections-per-ip 11000
        timeout            5m
    }
}
# the submission row: STARTTLS, AUTH PLAIN, then the message (the users'
# records: SCRAM-SHA-256, 4096 iterations, as Dovecot's for Postfix below)
server submission {
    listen 127.0.0.1:$PH_SUB_PORT
    auth { mechanisms plain }
    tls {
        certificate certs/bench.test.crt
        key         certs/bench.test.key
    }
    limits {
        message-size       20M
        connections        200
        connections-per-ip 200
    }
}
# IMAP in the clear, as Dovecot below: the rows measure the protocol, not TLS
server imap {
    protocol imap
    listen 127.0.0.1:$PH_IMAP_PORT
    auth { plaintext-requires-tls no }
}
CONF
# the recipients smtp-source and phload use: u, 2u ... 10u
# and the IMAP rows' user
# the IMAP rows' users: imap, and test1..test20 for imaptest's stress mode
for u in u 2u 3u 4u 5u 6u 7u 8u 9u 10u imap $(seq -f 'test%g' 20); do
    echo "bench-password" | "$bin" -c "$PH/posthorn.conf" user add "$u@bench.test" >/dev/null
done
# the submission row's password, for phload -P (never on a command line)
( umask 077; echo "bench-password" > "$D/password" )
PH_PID=""
start_posthorn() {
    "${NS[@]}" "$bin" serve -c "$PH/posthorn.conf" 2>>"$PH/log" &
    PH_PID=$!; PIDS+=("$PH_PID")
    wait_port $PH_PORT
}
stop_posthorn() { stop_pid "$PH_PID"; forget_pid "$PH_PID"; PH_PID=""; }

# ---- Postfix: a private instance, virtual Maildir delivery, default durability
PF="$D/postfix"
server_dir "$PF"
mkdir -p "$PF/etc" "$PF/queue" "$PF/data" "$PF/mail"
chown postfix:postfix "$PF/data" "$PF/mail"
pf_uid=$(id -u postfix); pf_gid=$(id -g postfix)
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
virtual_uid_maps = static:$pf_uid
virtual_gid_maps = static:$pf_gid
maillog_file_prefixes = $PF
maillog_file = $PF/maillog
# the load comes from one address: Postfix's per-client limit (50) would
# refuse part of the concurrency-100 rows; enough processes for them
smtpd_client_connection_count_limit = 0
default_process_limit = 250
# the submission row: posthorn's bench key and certificate, logins checked
# by the bench's Dovecot (its auth socket); no session cache and no tickets,
# as posthorn
smtpd_tls_cert_file = $PF/etc/bench.test.crt
smtpd_tls_key_file = $PF/etc/bench.test.key
smtpd_tls_session_cache_timeout = 0
smtpd_sasl_type = dovecot
smtpd_sasl_path = $D/dovecot/run/auth-postfix
CONF
install -m 644 "$PH/certs/bench.test.crt" "$PF/etc/bench.test.crt"
install -m 600 "$PH/certs/bench.test.key" "$PF/etc/bench.test.key"
for u in u 2u 3u 4u 5u 6u 7u 8u 9u 10u; do echo "$u@bench.test bench.test/$u/"; done > "$PF/etc/vmailbox"
cat > "$PF/etc/master.cf" <<CONF
127.0.0.1:$PF_PORT inet n - n - - smtpd
127.0.0.1:$PF_SUB_PORT inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
tlsmgr    unix - - n 1000? 1 tlsmgr
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
local     unix - n n - - local
virtual   unix - n n - - virtual
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
CONF
"${NS[@]}" postfix -c "$PF/etc" check >"$PF/check.log" 2>&1 || { cat "$PF/check.log" >&2; exit 1; }
PF_PID=""
start_postfix() {
    "${NS[@]}" /usr/lib/postfix/sbin/master -c "$PF/etc" -d >>"$PF/master.log" 2>&1 &
    PF_PID=$!; PIDS+=("$PF_PID")
    wait_port $PF_PORT
}
stop_postfix() { stop_pid "$PF_PID"; forget_pid "$PF_PID"; PF_PID=""; }

# ---- Dovecot: the IMAP reference, a private instance, default durability --------
# (mail_fsync = optimized); Maildir, plain IMAP on 127.0.0.1, one user
DV="$D/dovecot"
server_dir "$DV"
mkdir -p "$DV/run" "$DV/state" "$DV/mail"
chown dovecot:dovecot "$DV/mail"
dv_uid=$(id -u dovecot); dv_gid=$(id -g dovecot)
for u in imap $(seq -f 'test%g' 20); do echo "$u@bench.test:{PLAIN}bench-password"; done > "$DV/users"
# the submission row's user for Postfix: the same password, stored as
# posthorn stores it (SCRAM-SHA-256, 4096 iterations), so that both check a
# login at the same cost
echo "u@bench.test:$(doveadm pw -s SCRAM-SHA-256 -p bench-password)" >> "$DV/users"
cat > "$DV/dovecot.conf" <<CONF
base_dir = $DV/run
state_dir = $DV/state
instance_name = phbench-dovecot
log_path = $DV/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = $dv_uid
last_valid_uid = $dv_uid
mail_uid = $dv_uid
mail_gid = $dv_gid
mail_location = maildir:$DV/mail/%d/%n
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DV/users
}
userdb {
  driver = static
  args = uid=$dv_uid gid=$dv_gid home=$DV/mail/%d/%n
}
# Postfix's SASL (the submission row) asks here
service auth {
  unix_listener auth-postfix {
    mode = 0660
    user = postfix
    group = postfix
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $DV_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
CONF
DV_PID=""
start_dovecot() {
    "${NS[@]}" dovecot -F -c "$DV/dovecot.conf" >>"$DV/master.log" 2>&1 &
    DV_PID=$!; PIDS+=("$DV_PID")
    wait_port $DV_PORT
}
stop_dovecot() { stop_pid "$DV_PID"; forget_pid "$DV_PID"; DV_PID=""; }

# ---- smtp-sink: Postfix's server that stores nothing (the ceiling) -------------
SINK_PID=""
start_sink() {
    "${NS[@]}" smtp-sink -u postfix 127.0.0.1:$SINK_PORT 1024 >"$D/sink.log" 2>&1 &
    SINK_PID=$!; PIDS+=("$SINK_PID")
    wait_port $SINK_PORT
}

port_of() { case $1 in posthorn) echo $PH_PORT ;; postfix) echo $PF_PORT ;; sink) echo $SINK_PORT ;; esac; }
queue_count() {
    case $1 in
    posthorn) find "$PH/spool/queue" -type f 2>/dev/null | wc -l ;;
    postfix) find "$PF/queue/incoming" "$PF/queue/active" "$PF/queue/deferred" \
                  "$PF/queue/maildrop" -type f 2>/dev/null | wc -l ;;
    *) echo 0 ;;
    esac
}
mail_root() { case $1 in posthorn) echo "$PH/mail" ;; postfix) echo "$PF/mail" ;; esac; }
# Let the previous run's deliveries finish (bounded, 300 s).  Delivered
# files stay: deleting thousands of files would make the next runs' file
# creations slower (ext4 skips recently freed inodes), which is no part of
# either server.
settle() {
    local s=$1
    [ "$s" = sink ] && return 0
    for _ in $(seq 3000); do [ "$(queue_count "$s")" -eq 0 ] && break; sleep 0.1; done
}
# messages delivered to u@bench.test (the end-to-end and fsync rows send only there)
count_new() {
    local d; d="$(mail_root "$1")/bench.test/u/new"
    # shellcheck disable=SC2010  # the servers' own file names; ls -f does not sort
    if [ -d "$d" ]; then ls -f "$d" | grep -vc '^\.' || true; else echo 0; fi
}

now() { date +%s.%N; }

# ---- results ---------------------------------------------------------------------
# VALUES[row|server] = space separated values of the rounds
declare -A VALUES
declare -a ROWS
declare -A UNIT HIGHER REF
# name, unit, 1 if higher is better, the server compared with (postfix unless given)
# shellcheck disable=SC2034  # HIGHER: which way is better, not used by the table yet
add_row() { ROWS+=("$1"); UNIT[$1]=$2; HIGHER[$1]=$3; REF[$1]=${4:-postfix}; }
record() { VALUES["$1|$2"]="${VALUES["$1|$2"]:-} $3"; echo "  $1 [$2] $3" >&2; }

# durable accepted messages per second (smtp-source, a new connection per message)
throughput() {  # row server conc count size rcpts
    local row=$1 s=$2 c=$3 n=$4 size=$5 r=$6 t0 t1 rargs=()
    settle "$s"
    [ "$r" -gt 1 ] && rargs=(-r "$r")
    t0=$(now)
    if ! "${NS[@]}" timeout 300 smtp-source -s "$c" -m "$n" -l "$size" "${rargs[@]}" \
            -f load@client.test -t u@bench.test 127.0.0.1:"$(port_of "$s")" \
            >>"$D/source.log" 2>&1; then
        echo "bench: smtp-source against $s failed (see $D/source.log)" >&2
        record "$row" "$s" NA; return 0
    fi
    t1=$(now)
    record "$row" "$s" "$(echo "$n $t0 $t1" | awk '{ printf "%.1f", $1 / ($3 - $2) }')"
}

# the submission path of users' clients: per message a new connection,
# EHLO, STARTTLS and a full handshake, EHLO, AUTH PLAIN, one 1 KiB message
# to u@bench.test, QUIT (phload submit); messages per second
SUB_ROW="submission c=10 STARTTLS+AUTH 1K"
submission() {  # server count
    local s=$1 n=$2 port out rate fail
    case $s in posthorn) port=$PH_SUB_PORT ;; postfix) port=$PF_SUB_PORT ;; esac
    settle "$s"
    out=$("${NS[@]}" timeout 300 "$phload" submit -c 10 -n "$n" -s 1024 -u u@bench.test \
          -P "$D/password" -d bench.test -T 250 127.0.0.1 "$port" 2>>"$D/phload.log" || true)
    echo "  submission $s: $out" >&2
    rate=$(sed -n 's/.* rate=\([0-9.]*\).*/\1/p' <<<"$out")
    fail=$(sed -n 's/.* fail=\([0-9]*\).*/\1/p' <<<"$out")
    if [ -z "$rate" ] || [ "${fail:-1}" -ne 0 ]; then
        echo "bench: submission against $s failed (see $D/phload.log)" >&2
        rate=NA
    fi
    record "$SUB_ROW" "$s" "$rate"
}

# end to end: 5,000 (quick: 1,000) messages at concurrency 50 until all are in the Maildirs
end_to_end() {  # row server count
    local row=$1 s=$2 n=$3 t0 t1 got=0 before
    settle "$s"
    before=$(count_new "$s")
    t0=$(now)
    "${NS[@]}" timeout 300 smtp-source -s 50 -m "$n" -l 1024 -f load@client.test \
        -t u@bench.test 127.0.0.1:"$(port_of "$s")" >>"$D/source.log" 2>&1 || true
    for _ in $(seq 3000); do
        got=$(( $(count_new "$s") - before ))
        [ "$got" -ge "$n" ] && break
        sleep 0.1
    done
    t1=$(now)
    if [ "$got" -lt "$n" ]; then record "$row" "$s" NA; return 0; fi
    record "$row" "$s" "$(echo "$t0 $t1" | awk '{ printf "%.2f", $2 - $1 }')"
}

# latency of a whole transaction at half of the server's own best 1 KiB rate
latency() {  # server secs
    local s=$1 secs=$2 best rate n out
    best=$(for r in "tput c=10 1K" "tput c=100 1K"; do
               for v in ${VALUES["$r|$s"]:-}; do echo "$v"; done; done |
           grep -v NA | sort -g | tail -1)
    [ -n "$best" ] || best=100
    rate=$(echo "$best" | awk '{ printf "%.0f", $1 / 2 }')
    n=$(echo "$rate $secs" | awk '{ printf "%d", $1 * $2 }')
    settle "$s"
    out=$("${NS[@]}" timeout 300 "$phload" tx -c 200 -n "$n" -s 1024 -R "$rate" -T 200 \
          127.0.0.1 "$(port_of "$s")" 2>>"$D/phload.log" || true)
    echo "  latency $s at $rate/s: $out" >&2
    record "p50 latency at half load" "$s" "$(sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p' <<<"$out")"
    record "p99 latency at half load" "$s" "$(sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p' <<<"$out")"
}

# resident memory per idle session (posthorn; Postfix runs a process per session)
idle_row() {  # n kind
    case $2 in
    plain) echo "RSS per idle session, $1 plain" ;;
    starttls) echo "RSS per idle session, $1 after STARTTLS" ;;
    implicit) echo "RSS per idle session, $1 implicit TLS" ;;
    esac
}
idle_sessions() {  # n plain|starttls|implicit
    local n=$1 kind=$2 out args=() row port=$PH_PORT
    case $kind in
    starttls) args=(-S) ;;
    implicit) args=(-I); port=$PH_TLS_PORT ;;
    esac
    row=$(idle_row "$n" "$kind")
    out=$("${NS[@]}" timeout 200 "$phload" idle -n "$n" "${args[@]}" -p "$PH_PID" -H 3 -T 150 \
          127.0.0.1 "$port" 2>>"$D/phload.log" || true)
    echo "  idle: $out" >&2
    record "$row" posthorn "$(sed -n 's/.*per_session_bytes=\([0-9.-]*\).*/\1/p' <<<"$out" |
                               awk '{ printf "%.0f", $1 }')"
}

# full TLS handshakes per second: posthorn's implicit-TLS port beside openssl
# s_server on the same key; server on core 0, client on core 1
tls_handshakes() {  # secs
    local secs=$1 port=$2 s=$3 n
    n=$("${NS[@]}" taskset -c 1 timeout $((secs + 20)) openssl s_time -connect 127.0.0.1:"$port" \
          -new -time "$secs" 2>/dev/null |
        sed -n 's/^\([0-9]*\) connections in \([0-9.]*\) real seconds.*/\1 \2/p' |
        awk '{ if ($2 > 0) printf "%.0f", $1 / $2 }')
    record "TLS handshakes/s" "$s" "${n:-NA}"
}

# fsync + fdatasync system calls per message, delivery included: the server
# runs under `perf stat` for one load of 2,000 messages at concurrency 10
FSYNC_EVENTS=syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync,syscalls:sys_enter_syncfs,syscalls:sys_enter_sync,task-clock
fsyncs_per_message() {  # server count
    local s=$1 n=$2 pp child calls
    settle "$s"
    local before; before=$(count_new "$s")
    if [ "$s" = posthorn ]; then
        "${NS[@]}" perf stat -x, -e "$FSYNC_EVENTS" -o "$D/perf-$s.txt" -- \
            env POSTHORN_DEBUG=1 "$bin" serve -c "$PH/posthorn.conf" 2>"$PH/log.fsync" &
    else
        "${NS[@]}" perf stat -x, -e "$FSYNC_EVENTS" -o "$D/perf-$s.txt" -- \
            /usr/lib/postfix/sbin/master -c "$PF/etc" -d >>"$PF/master.log" 2>&1 &
    fi
    pp=$!; PIDS+=("$pp")
    wait_port "$(port_of "$s")"
    "${NS[@]}" timeout 300 smtp-source -s 10 -m "$n" -l 1024 -f load@client.test \
        -t u@bench.test 127.0.0.1:"$(port_of "$s")" >>"$D/source.log" 2>&1 || true
    for _ in $(seq 3000); do
        [ "$(count_new "$s")" -ge $((before + n)) ] && [ "$(queue_count "$s")" -eq 0 ] && break
        sleep 0.1
    done
    child=$(awk '{ print $1 }' "/proc/$pp/task/$pp/children" 2>/dev/null || true)
    [ -n "$child" ] && stop_pid "$child"
    for _ in $(seq 100); do kill -0 "$pp" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$pp"; forget_pid "$pp"
    calls=$(awk -F, '/syscalls/ { n += $1 } END { print n + 0 }' "$D/perf-$s.txt" 2>/dev/null)
    record "fsyncs per message (accept + delivery)" "$s" \
        "$(echo "$calls $n" | awk '{ printf "%.2f", $1 / $2 }')"
    # CPU time of the server and all its processes and threads: what a
    # message costs, whatever share of the machine the scheduler gave it
    local ms
    ms=$(awk -F, '/task-clock/ { print $1; exit }' "$D/perf-$s.txt" 2>/dev/null)
    record "server CPU ms per message (accept + delivery)" "$s" \
        "$(echo "${ms:-0} $n" | awk '{ if ($1 > 0) printf "%.3f", $1 / $2; else print "NA" }')"
    if [ "$s" = posthorn ]; then
        local line; line=$(grep 'event=spool-stats' "$PH/log.fsync" | tail -1 || true)
        local a m
        m=$(sed -n 's/.* messages=\([0-9]*\).*/\1/p' <<<"$line")
        a=$(sed -n 's/.* accept_fsyncs=\([0-9]*\).*/\1/p' <<<"$line")
        if [ -n "$m" ] && [ "$m" -gt 0 ]; then
            record "fsyncs per message (accept path)" posthorn \
                "$(echo "$a $m" | awk '{ printf "%.2f", $1 / $2 }')"
            echo "  spool: $line" >&2
        fi
    fi
}

# instructions per 1 KiB message through the whole pipeline (callgrind):
# instrumentation switched on only around N messages, delivery included
callgrind_per_message() {  # count
    local n=$1 vp
    rm -f "$D/callgrind.out"
    # the same code built without the seccomp filter (valgrind has no
    # seccomp(2)): build/bench/posthorn-callgrind
    "${NS[@]}" valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$D/callgrind.out" "$top/build/bench/posthorn-callgrind" serve -c "$PH/posthorn.conf" \
        2>"$D/valgrind.log" &
    vp=$!; PIDS+=("$vp")
    # instrumentation on only once start-up (certificates, CA store) is over
    for _ in $(seq 900); do grep -q 'event=ready' "$D/valgrind.log" 2>/dev/null && break; sleep 0.1; done
    local before; before=$(count_new posthorn)
    (cd "$D" && callgrind_control -i on "$vp" >/dev/null)
    "${NS[@]}" timeout 300 "$phload" tx -c 1 -n "$n" -s 1024 -T 250 127.0.0.1 $PH_PORT \
        >>"$D/phload.log" 2>&1 || true
    for _ in $(seq 1200); do
        [ "$(count_new posthorn)" -ge $((before + n)) ] && [ "$(queue_count posthorn)" -eq 0 ] && break
        sleep 0.1
    done
    (cd "$D" && callgrind_control -i off "$vp" >/dev/null)
    stop_pid "$vp"; forget_pid "$vp"
    local ir
    ir=$(callgrind_annotate "$D/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }' || true)
    record "instructions per 1 KiB message" posthorn \
        "$(echo "${ir:-0} $n" | awk '{ if ($1 > 0) printf "%.0f", $1 / $2; else print "NA" }')"
    if [ -n "${CALLGRIND_KEEP:-}" ]; then cp "$D/callgrind.out" "$CALLGRIND_KEEP"; fi
    return 0
}

# APPEND latency as a mail client sees it: imaplib (the literal and its CRLF
# in two writes, Nagle on), N APPENDs of 1 KiB on one logged-in connection
append_latency() {  # server count
    local s=$1 n=$2 port out p50 p95
    case $s in posthorn) port=$PH_IMAP_PORT ;; dovecot) port=$DV_PORT ;; esac
    out=$("${NS[@]}" timeout 300 /usr/bin/python3 "$top/bench/imap-append.py" --port "$port" \
          --user imap@bench.test --password bench-password -n "$n" 2>>"$D/imap-append.log" || true)
    echo "  append $s: $out" >&2
    p50=$(sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p' <<<"$out")
    p95=$(sed -n 's/.*p95_ms=\([0-9.]*\).*/\1/p' <<<"$out")
    record "APPEND p50 latency (imaplib)" "$s" "${p50:-NA}"
    record "APPEND p95 latency (imaplib)" "$s" "${p95:-NA}"
}

# ---- IMAP beside Dovecot ------------------------------------------------------------
# CPU seconds (user + system) a server used so far: posthorn is one process;
# Dovecot is a master with a process per login and per session, so its
# count is the master's own and waited-for children's times plus those of
# its children still running.
cpu_seconds() {  # server
    local pid t=0 tck
    tck=$(getconf CLK_TCK)
    case $1 in
    posthorn) t=$(awk '{ print $14 + $15 }' "/proc/$PH_PID/stat") ;;
    dovecot)
        t=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$DV_PID/stat")
        for pid in $(pgrep -P "$DV_PID"); do
            t=$((t + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
        done ;;
    esac
    echo "$t $tck" | awk '{ printf "%.2f", $1 / $2 }'
}
imap_port() { case $1 in posthorn) echo $PH_IMAP_PORT ;; dovecot) echo $DV_PORT ;; esac; }

# imaptest's stress mode (its default mix of LOGIN, LIST, STATUS, SELECT,
# FETCH, STORE, EXPUNGE, APPEND, LOGOUT), 10 clients over 20 users for
# STRESS_SECS: commands and logins per second, commands per server CPU
# second, and the number of Error: lines imaptest printed.
imap_stress() {  # server
    local s=$1 log="$D/imaptest-$1.log" c0 c1 line cmds logins errors
    c0=$(cpu_seconds "$s")
    (cd "$D" && "${NS[@]}" timeout -k 10 $((STRESS_SECS + 60)) "$imaptest" host=127.0.0.1 \
        port="$(imap_port "$s")" user='test%d@bench.test' pass=bench-password users=20 \
        clients=10 secs="$STRESS_SECS" mbox="$D/stress.mbox") >"$log" 2>&1 </dev/null || true
    c1=$(cpu_seconds "$s")
    line=$(sed -n '/^Totals:/,$p' "$log" | sed -n 5p)
    if [ -z "$line" ]; then
        echo "bench: imaptest against $s did not finish (see $log)" >&2
        for r in "imaptest commands/s" "imaptest logins/s" "imaptest commands per CPU second"; do
            record "$r" "$s" NA
        done
        return 0
    fi
    cmds=$(awk '{ for (i = 1; i <= NF; i++) t += $i; print t }' <<<"$line")
    logins=$(awk '{ print $1 }' <<<"$line")
    errors=$(grep -c '^Error:' "$log" || true)
    echo "  imaptest $s: $cmds commands, $logins logins, $errors Error: lines, CPU $c0 -> $c1 s" >&2
    record "imaptest commands/s" "$s" "$(echo "$cmds $STRESS_SECS" | awk '{ printf "%.1f", $1 / $2 }')"
    record "imaptest logins/s" "$s" "$(echo "$logins $STRESS_SECS" | awk '{ printf "%.1f", $1 / $2 }')"
    record "imaptest commands per CPU second" "$s" \
        "$(echo "$cmds $c0 $c1" | awk '$3 > $2 { printf "%.0f", $1 / ($3 - $2); exit } { print "NA" }')"
    record "imaptest Error: lines" "$s" "$errors"
}

# The big folder: the same BIG_N messages in each server's Maildir
# (bench/imap-bigfolder.py), indexed once by a first SELECT before any
# timing; each round then restarts the server, so that "cold" is the
# first command after a start (the server's caches empty, its index files
# and the kernel's page cache as a running server would have them).
BIG_ROWS=(select fetch_flags search_text sort_date sort_subject thread_refs)
big_row_name() {
    case $1 in
    select) echo "SELECT" ;; fetch_flags) echo "FETCH 1:* (FLAGS)" ;;
    search_text) echo "SEARCH TEXT" ;; sort_date) echo "SORT (DATE)" ;;
    sort_subject) echo "SORT (SUBJECT)" ;; thread_refs) echo "THREAD REFERENCES" ;;
    esac
}
big_folder_setup() {
    local root
    for s in posthorn dovecot; do
        case $s in posthorn) root="$PH/mail/bench.test/imap" ;; dovecot) root="$DV/mail/bench.test/imap" ;; esac
        /usr/bin/python3 "$top/bench/imap-bigfolder.py" "$root" big "$BIG_N" >&2
    done
    chown -R dovecot:dovecot "$DV/mail"
    chown -R "$(stat -c %u:%g "$PH/mail")" "$PH/mail/bench.test"
    for s in posthorn dovecot; do   # the first SELECT builds each server's index
        "${NS[@]}" timeout 600 /usr/bin/python3 "$top/bench/imap-ops.py" --port "$(imap_port "$s")" \
            --user imap@bench.test --password bench-password --hold 1 --hold-secs 0 >/dev/null 2>&1 ||
            echo "bench: indexing the big folder on $s failed" >&2
    done
}
big_folder_ops() {  # server
    local s=$1 out r t v
    out=$("${NS[@]}" timeout 1800 /usr/bin/python3 "$top/bench/imap-ops.py" --port "$(imap_port "$s")" \
          --user imap@bench.test --password bench-password 2>>"$D/imap-ops.log" || true)
    echo "  big folder $s: $out" >&2
    for r in "${BIG_ROWS[@]}"; do
        for t in cold warm; do
            v=$(sed -n "s/.*\b${r}_${t}_ms=\([0-9.NA]*\).*/\1/p" <<<"$out")
            record "$BIG_N msgs: $(big_row_name "$r") $t" "$s" "${v:-NA}"
        done
    done
    record "$BIG_N msgs: QRESYNC SELECT after 100 changes" "$s" \
        "$(sed -n 's/.*qresync_ms=\([0-9.NA]*\).*/\1/p' <<<"$out")"
    record "$BIG_N msgs: QRESYNC FETCH responses" "$s" \
        "$(sed -n 's/.*qresync_fetches=\([0-9NA]*\).*/\1/p' <<<"$out")"
}
# Memory per session with the big folder selected: 10 such sessions held
# (Dovecot's default limit per user and address); posthorn: its RSS growth
# over them; Dovecot: the proportional set size (shared pages divided
# among their users) of its 10 imap processes.
big_folder_memory() {  # server
    local s=$1 k=10 before after pid p sum=0
    [ "$s" = posthorn ] && before=$(awk '/^VmRSS/ { print $2 * 1024 }' "/proc/$PH_PID/status")
    rm -f "$D/hold.out"
    "${NS[@]}" timeout 900 /usr/bin/python3 "$top/bench/imap-ops.py" --port "$(imap_port "$s")" \
        --user imap@bench.test --password bench-password --hold $k --hold-secs 600 \
        </dev/null >"$D/hold.out" 2>>"$D/imap-ops.log" &
    pid=$!; PIDS+=("$pid")
    for _ in $(seq 6000); do
        grep -q held "$D/hold.out" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q held "$D/hold.out" 2>/dev/null; then
        record "memory per session, $BIG_N msgs selected" "$s" NA
    elif [ "$s" = posthorn ]; then
        after=$(awk '/^VmRSS/ { print $2 * 1024 }' "/proc/$PH_PID/status")
        record "memory per session, $BIG_N msgs selected" posthorn \
            "$(echo "$before $after $k" | awk '{ printf "%.0f", ($2 - $1) / $3 }')"
    else
        for p in $(pgrep -P "$DV_PID" -x imap); do
            sum=$((sum + $(awk '/^Pss:/ { print $2 * 1024 }' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)))
        done
        record "memory per session, $BIG_N msgs selected" dovecot "$((sum / k))"
    fi
    stop_pid "$pid"; forget_pid "$pid"
}

imap_rows() {  # rounds count
    add_row "APPEND p50 latency (imaplib)" ms 0 dovecot
    add_row "APPEND p95 latency (imaplib)" ms 0 dovecot
    add_row "imaptest commands/s" 1/s 1 dovecot
    add_row "imaptest logins/s" 1/s 1 dovecot
    add_row "imaptest commands per CPU second" 1/s 1 dovecot
    add_row "imaptest Error: lines" lines 0 dovecot
    local r t
    for r in "${BIG_ROWS[@]}"; do
        for t in cold warm; do add_row "$BIG_N msgs: $(big_row_name "$r") $t" ms 0 dovecot; done
    done
    add_row "$BIG_N msgs: QRESYNC SELECT after 100 changes" ms 0 dovecot
    add_row "$BIG_N msgs: QRESYNC FETCH responses" responses 0 dovecot
    add_row "memory per session, $BIG_N msgs selected" bytes 0 dovecot
    /usr/bin/python3 "$top/third_party/imaptest/mbox.py" "$D/stress.mbox" >/dev/null
    [ -n "$PH_PID" ] || start_posthorn
    start_dovecot
    for round in $(seq "$1"); do
        for s in posthorn dovecot; do append_latency "$s" "$2"; done
        for s in posthorn dovecot; do imap_stress "$s"; done
    done
    big_folder_setup
    for round in $(seq "$1"); do
        stop_posthorn; start_posthorn; big_folder_ops posthorn
        stop_dovecot; start_dovecot; big_folder_ops dovecot
    done
    for s in posthorn dovecot; do big_folder_memory "$s"; done
    stop_dovecot
}

# ---- the plan ---------------------------------------------------------------------
if [ "$mode" = imap ]; then
    rounds=${ROUNDS:-3}; APPEND_N=200; STRESS_SECS=${STRESS_SECS:-20}; BIG_N=${BIG_N:-100000}
elif [ "$mode" = quick ]; then
    rounds=1; APPEND_N=200; STRESS_SECS=5; BIG_N=5000
    TPUT=("tput c=10 1K|10|800|1024|1" "tput c=100 1K|100|800|1024|1")
    SUB_N=300; E2E=800; LAT_SECS=3; IDLE=1000; IDLE_TLS=100; TLS_SECS=2; FSYNC_N=300; CG_N=20
else   # full, smtp
    rounds=3
    [ "$mode" = smtp ] && rounds=${ROUNDS:-3}
    TPUT=("tput c=1 1K|1|300|1024|1" "tput c=10 1K|10|3000|1024|1"
          "tput c=100 1K|100|5000|1024|1" "tput c=10 100K|10|800|102400|1"
          "tput c=100 100K|100|1000|102400|1" "tput c=10 1M|10|200|1048576|1"
          "tput c=10 1K 10 rcpts|10|1000|1024|10")
    SUB_N=2000; E2E=5000; LAT_SECS=10; IDLE=10000; IDLE_TLS=10000; TLS_SECS=8; FSYNC_N=2000; CG_N=200
    APPEND_N=200; STRESS_SECS=20; BIG_N=100000
fi
echo "bench: $mode run, namespace $ns, folder $D, $rounds round(s), A B alternating, file systems: $BENCH_FS" >&2
if [ "$mode" = imap ]; then
    imap_rows "$rounds" "$APPEND_N"
    stop_posthorn
else
    for t in "${TPUT[@]}"; do add_row "${t%%|*}" msg/s 1; done
    add_row "$SUB_ROW" msg/s 1
    add_row "end-to-end $E2E msgs c=50" s 0
    add_row "p50 latency at half load" ms 0
    add_row "p99 latency at half load" ms 0

    # Dovecot checks Postfix's logins for the submission row
    start_posthorn; start_postfix; start_sink; start_dovecot
    for round in $(seq "$rounds"); do
        echo "bench: round $round" >&2
        for t in "${TPUT[@]}"; do
            IFS='|' read -r row c n size r <<<"$t"
            for s in posthorn postfix sink; do throughput "$row" "$s" "$c" "$n" "$size" "$r"; done
        done
        for s in posthorn postfix; do submission "$s" "$SUB_N"; done
        for s in posthorn postfix; do end_to_end "end-to-end $E2E msgs c=50" "$s" "$E2E"; done
    done
    stop_dovecot
    for round in $(seq "$rounds"); do
        for s in posthorn postfix; do latency "$s" "$LAT_SECS"; done
    done
    stop_pid "$SINK_PID"; forget_pid "$SINK_PID"
    [ "$mode" = smtp ] || imap_rows "$rounds" "$APPEND_N"

    # memory: nothing else runs, each kind on a freshly started daemon
    settle posthorn
    stop_postfix
    for kind in plain starttls implicit; do
        n=$IDLE; [ "$kind" = plain ] || n=$IDLE_TLS
        add_row "$(idle_row "$n" "$kind")" bytes 0
        stop_posthorn; start_posthorn
        idle_sessions "$n" "$kind"
    done
    stop_posthorn

    if [ "$TLS_SECS" -gt 0 ]; then
        add_row "TLS handshakes/s" 1/s 1
        "${NS[@]}" taskset -c 0 "$bin" serve -c "$PH/posthorn.conf" 2>>"$PH/log" &
        PH_PID=$!; PIDS+=("$PH_PID"); wait_port $PH_TLS_PORT
        "${NS[@]}" taskset -c 0 openssl s_server -quiet -accept 127.0.0.1:$SSERVER_PORT \
            -cert "$PH/certs/bench.test.crt" -key "$PH/certs/bench.test.key" \
            </dev/null >"$D/s_server.log" 2>&1 &
        SS_PID=$!; PIDS+=("$SS_PID"); wait_port $SSERVER_PORT
        for round in $(seq "$rounds"); do
            tls_handshakes "$TLS_SECS" $PH_TLS_PORT posthorn
            tls_handshakes "$TLS_SECS" $SSERVER_PORT "openssl s_server"
        done
        stop_pid "$SS_PID"; forget_pid "$SS_PID"
        stop_posthorn
    fi
    if [ "$FSYNC_N" -gt 0 ]; then
        add_row "fsyncs per message (accept + delivery)" calls 0
        add_row "fsyncs per message (accept path)" calls 0
        add_row "server CPU ms per message (accept + delivery)" ms 0
        fsyncs_per_message posthorn "$FSYNC_N"
        fsyncs_per_message postfix "$FSYNC_N"
    fi
    if [ "$CG_N" -gt 0 ]; then
        add_row "instructions per 1 KiB message" Ir 0
        callgrind_per_message "$CG_N"
    fi
fi

# ---- the table -----------------------------------------------------------------------
stats() {  # values... -> "median min max" (NA when none)
    printf '%s\n' "$@" | grep -v -e '^$' -e NA | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) { print "NA NA NA"; exit }
              m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf "%g %g %g\n", m, v[1], v[NR] }'
}
{
    printf 'row\tunit\tposthorn_median\tposthorn_min\tposthorn_max\treference\treference_median\treference_min\treference_max\tceiling\tceiling_median\tceiling_min\tceiling_max\tratio_posthorn_reference\n'
    for row in "${ROWS[@]}"; do
        ref=${REF[$row]}
        # shellcheck disable=SC2086
        read -r pm pl ph <<<"$(stats ${VALUES["$row|posthorn"]:-})"
        # shellcheck disable=SC2086
        read -r fm fl fh <<<"$(stats ${VALUES["$row|$ref"]:-})"
        ceil=""; cm=NA; cl=NA; chh=NA
        if [ -n "${VALUES["$row|sink"]:-}" ]; then ceil=smtp-sink
            # shellcheck disable=SC2086
            read -r cm cl chh <<<"$(stats ${VALUES["$row|sink"]})"
        elif [ -n "${VALUES["$row|openssl s_server"]:-}" ]; then ceil="openssl s_server"
            # shellcheck disable=SC2086
            read -r cm cl chh <<<"$(stats ${VALUES["$row|openssl s_server"]})"
        fi
        ratio=$(echo "$pm $fm" | awk '$1 != "NA" && $2 != "NA" && $2 > 0 { printf "%.2f", $1 / $2; exit } { print "NA" }')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "${UNIT[$row]}" \
            "$pm" "$pl" "$ph" "$ref" "$fm" "$fl" "$fh" "${ceil:-NA}" "$cm" "$cl" "$chh" "$ratio"
    done
} > "$tsv"
echo
echo "posthorn vs Postfix $(dpkg-query -W -f='${Version}' postfix) and Dovecot $(dpkg-query -W -f='${Version}' dovecot-imapd), $mode run, $rounds round(s), $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC'), file systems: $BENCH_FS"
awk -F'\t' 'NR == 1 { printf "| %s | %s | %s | %s | %s | %s |\n| --- | --- | --- | --- | --- | --- |\n",
          "measure", "posthorn median (min–max)", "reference median (min–max)",
          "ceiling median (min–max)", "posthorn/reference", "unit"; next }
{
    p = ($3 == "NA") ? "n/a" : $3 " (" $4 "–" $5 ")"
    name = ($6 == "dovecot") ? "Dovecot" : "Postfix"
    f = ($7 == "NA") ? "n/a" : name " " $7 " (" $8 "–" $9 ")"
    c = ($11 == "NA") ? "" : $10 " " $11 " (" $12 "–" $13 ")"
    r = ($14 == "NA") ? "" : $14 "×"
    printf "| %s | %s | %s | %s | %s | %s |\n", $1, p, f, c, r, $2
}' "$tsv"
echo
echo "TSV: $tsv"
