#!/bin/sh
# What the benchmark needs beyond scripts/install-deps: Postfix (the server
# compared with, and its smtp-source and smtp-sink), Dovecot's IMAP server
# (the IMAP reference), valgrind (callgrind) and perf (fsync and CPU
# counts).  Neither server is let take over this machine's ports 25, 143 or
# 993: debconf says "No configuration" for Postfix, a policy-rc.d forbids
# starting services during the install, and the system services are
# disabled afterwards; the benchmark runs private instances of its own.
# Does nothing when everything is there.
set -eu
missing=""
for p in postfix dovecot-imapd valgrind linux-perf; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
[ "$(id -u)" -eq 0 ] || { echo "bench/install-deps.sh: run as root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
prc=/usr/sbin/policy-rc.d
made_prc=""
if [ ! -e "$prc" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$prc"
    chmod 755 "$prc"
    made_prc=1
fi
cleanup() { [ -n "$made_prc" ] && rm -f "$prc"; return 0; }
trap cleanup EXIT INT TERM
echo "bench/install-deps.sh: installing:$missing"
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
# never started at boot either
for svc in postfix dovecot; do
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable "$svc" >/dev/null 2>&1 || true
    fi
    update-rc.d "$svc" disable >/dev/null 2>&1 || true
done
