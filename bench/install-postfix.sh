#!/bin/sh
# Install Postfix from Debian for the benchmark, without letting it take
# over this machine's port 25: debconf says "No configuration", a
# policy-rc.d forbids starting services during the install, and the system
# service is disabled afterwards.  The benchmark runs its own private
# instance (bench/postfix-instance.sh).  Does nothing when Postfix is there.
set -eu
if dpkg-query -W -f='${Status}' postfix 2>/dev/null | grep -q "ok installed"; then
    exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "install-postfix: run as root" >&2; exit 1; }
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
apt-get update -qq
apt-get install -y -qq --no-install-recommends postfix >/dev/null
# never started at boot either; the benchmark's instance has its own folder
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable postfix >/dev/null 2>&1 || true
fi
update-rc.d postfix disable >/dev/null 2>&1 || true
echo "install-postfix: postfix installed, system service disabled"
