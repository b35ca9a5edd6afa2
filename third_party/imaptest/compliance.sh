#!/bin/bash
# Run Dovecot imaptest's scripted IMAP compliance tests against a server.
#
#   compliance.sh HOST PORT USER PASS [USER2 PASS2]
#
# Builds imaptest first if needed (build.sh, into IMAPTEST_DIR).  Runs every test file of
# imaptest's src/tests (the broken/ subdirectory and *.mbox data files are not
# tests; imaptest's own directory scan skips them too), one imaptest process
# per file, so that each test group gets its own result.
#
# stdout:  "log: FILE"  (full imaptest output of every test)
#          one line per test group: "PASS name" | "FAIL name" | "SKIP name"
#          last line: "imaptest: N passed, M failed, K skipped"
# Result of one group, from imaptest's "1 test groups: F failed, S skipped" line:
#   SKIP  S=1: the server does not advertise a capability the test requires
#         (or the test needs user2 and none was given)
#   FAIL  F>0, or no summary line at all (crash, timeout, connection lost)
#   PASS  otherwise
# Exit: 0 when no group failed, 1 when some failed, 2 when the server could not
# be reached or USER could not log in (then every group is counted as failed).
#
# USER2 is passed as imaptest's user2= (only tests with "user 2: $user2" use it,
# currently just urlauth2).  imaptest logs every user in with the one pass=
# password, so PASS2 must equal PASS.
#
# Environment: IMAPTEST_DIR (build dir, default build/imaptest of the
#   repository, where `make imaptest-tool` builds it),
#   IMAPTEST_LOG (log path; default a new /tmp/imaptest-compliance-*.log),
#   IMAPTEST_TESTS (test directory; default the build's src/tests),
#   IMAPTEST_TEST_TIMEOUT (seconds per test file, default 60),
#   IMAPTEST_RAWLOG=1 (keep imaptest rawlogs in LOG.raw/<test>/).
# Tests use the mailboxes "imaptest*" of USER: run one instance per user at a time.
set -uo pipefail

if [ $# -ne 4 ] && [ $# -ne 6 ]; then
    echo "usage: $0 HOST PORT USER PASS [USER2 PASS2]" >&2
    exit 64
fi
HOST=$1 PORT=$2 IUSER=$3 PASS=$4 USER2=${5:-} PASS2=${6:-}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IMAPTEST_DIR=$(realpath -m "${IMAPTEST_DIR:-$HERE/../../build/imaptest}")
"$HERE/build.sh" "$IMAPTEST_DIR" || { echo "compliance.sh: build failed" >&2; exit 2; }
IMAPTEST="$IMAPTEST_DIR/imaptest"
TESTS=${IMAPTEST_TESTS:-$IMAPTEST_DIR/imaptest-src/src/tests}
TIMEOUT=${IMAPTEST_TEST_TIMEOUT:-60}
[ -d "$TESTS" ] || { echo "compliance.sh: no test directory $TESTS" >&2; exit 2; }

if [ -n "$USER2" ] && [ "$PASS2" != "$PASS" ]; then
    echo "compliance.sh: warning: imaptest logs USER2 in with PASS (one password for all users); PASS2 is ignored" >&2
fi

LOG=${IMAPTEST_LOG:-$(mktemp --suffix=.log "/tmp/imaptest-compliance-$HOST-$PORT.XXXXXX")}
: >"$LOG" || { echo "compliance.sh: cannot write $LOG" >&2; exit 2; }
echo "log: $LOG"

WORK=$(mktemp -d /tmp/imaptest-compliance-work.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# Test files, in imaptest's order (strcmp): regular files, no dot files, no *.mbox.
TEST_NAMES=()
while IFS= read -r f; do TEST_NAMES+=("$f"); done < <(
    cd "$TESTS" && for x in *; do
        [ -f "$x" ] && [ "${x%.mbox}" = "$x" ] && printf '%s\n' "$x"
    done | LC_ALL=C sort)
[ ${#TEST_NAMES[@]} -gt 0 ] || { echo "compliance.sh: no tests in $TESTS" >&2; exit 2; }

{
    echo "# imaptest compliance run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# server $HOST:$PORT user=$IUSER${USER2:+ user2=$USER2}"
    echo "# imaptest $IMAPTEST_DIR/imaptest-src ($(cat "$IMAPTEST_DIR/imaptest-src/version" 2>/dev/null)), tests $TESTS (${#TEST_NAMES[@]} files)"
} >>"$LOG"

# --- preflight: greeting and LOGIN (at most 30 s) ------------------------------
PREFLIGHT='
q() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf "\"%s\"" "$s"; }
exec 3<>"/dev/tcp/$1/$2" || exit 1
IFS= read -r -t 15 line <&3
case $line in "* OK"*) ;; *) echo "preflight: greeting: ${line:-<none>}"; exit 1 ;; esac
printf "pf1 LOGIN %s %s\r\npf2 LOGOUT\r\n" "$(q "$3")" "$(q "$4")" >&3
while IFS= read -r -t 15 line <&3; do
    case $line in "pf1 OK"*) exit 0 ;; "pf1 "*) echo "preflight: $line"; exit 1 ;; esac
done
echo "preflight: no reply to LOGIN"; exit 1'
if ! timeout -k 2 30 bash -c "$PREFLIGHT" preflight "$HOST" "$PORT" "$IUSER" "$PASS" >>"$LOG" 2>&1 </dev/null; then
    echo "compliance.sh: cannot connect to $HOST:$PORT or log in as $IUSER (see $LOG)" >&2
    echo "preflight FAILED: no test was run" >>"$LOG"
    for t in "${TEST_NAMES[@]}"; do echo "FAIL $t"; done
    echo "imaptest: 0 passed, ${#TEST_NAMES[@]} failed, 0 skipped"
    exit 2
fi

# --- run -------------------------------------------------------------------------
npass=0 nfail=0 nskip=0
SUMMARY=$WORK/summary.tsv
printf 'test\tresult\tbase_failed/total\text_failed/total\trc\n' >"$SUMMARY"
for t in "${TEST_NAMES[@]}"; do
    out=$WORK/out
    args=(host="$HOST" port="$PORT" user="$IUSER" pass="$PASS" test="$TESTS/$t")
    [ -n "$USER2" ] && args+=(user2="$USER2")
    rundir=$WORK/run
    if [ "${IMAPTEST_RAWLOG:-0}" = 1 ]; then
        rundir="${LOG%.log}.raw/$t"; args+=(rawlog)
    fi
    mkdir -p "$rundir"
    (cd "$rundir" && timeout -k 5 "$TIMEOUT" "$IMAPTEST" "${args[@]}") >"$out" 2>&1 </dev/null
    rc=$?
    groups=$(grep -Eo '^[0-9]+ test groups: [0-9]+ failed, [0-9]+ skipped' "$out" | tail -1)
    base=$(sed -n 's/^base protocol: \([0-9]*\/[0-9]*\).*/\1/p' "$out" | tail -1)
    ext=$(sed -n 's/^extensions: \([0-9]*\/[0-9]*\).*/\1/p' "$out" | tail -1)
    if [ -z "$groups" ]; then
        res=FAIL; why=" (no summary line: rc=$rc$([ $rc = 124 ] && echo ", timed out after ${TIMEOUT}s"))"
    else
        failed=$(sed -E 's/.*: ([0-9]+) failed.*/\1/' <<<"$groups")
        skipped=$(sed -E 's/.*, ([0-9]+) skipped/\1/' <<<"$groups")
        why=""
        if [ "$failed" != 0 ]; then res=FAIL
        elif [ "$skipped" != 0 ]; then res=SKIP
        else res=PASS; fi
    fi
    case $res in PASS) npass=$((npass+1)) ;; FAIL) nfail=$((nfail+1)) ;; SKIP) nskip=$((nskip+1)) ;; esac
    printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$res" "${base:--}" "${ext:--}" "$rc" >>"$SUMMARY"
    {
        echo
        echo "===== $t: $res$why  rc=$rc base=${base:--} ext=${ext:--} ====="
        cat "$out"
    } >>"$LOG"
    echo "$res $t"
done

{
    echo
    echo "===== summary (failed/total individual commands: base protocol, extensions) ====="
    column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
    echo "imaptest: $npass passed, $nfail failed, $nskip skipped"
} >>"$LOG"
echo "imaptest: $npass passed, $nfail failed, $nskip skipped"
[ "$nfail" = 0 ]
