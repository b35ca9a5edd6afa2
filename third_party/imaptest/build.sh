#!/bin/bash
# Build Dovecot's imaptest from the tarball beside this script into DIR:
#   third_party/imaptest/build.sh DIR
# DIR receives imaptest-src/ (the unpacked tree; its scripted tests are in
# imaptest-src/src/tests), build.log, and the wrapper DIR/imaptest, which
# runs the binary with Dovecot's libraries (/usr/lib/dovecot).  The wrapper
# is written last: its presence means a finished build.  Nothing is done
# when it is newer than the tarball; concurrent builds into one DIR wait
# for each other (flock).  Needs dovecot-dev, autoconf, automake, libtool,
# make and gcc (scripts/install-deps installs them); this script installs
# nothing itself.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tarball="$here/imaptest-924f619.tar.gz"
dir=$(realpath -m "${1:?usage: build.sh DIR}")
wrapper="$dir/imaptest"
src="$dir/imaptest-src"
dovecot=/usr/lib/dovecot

say() { echo "imaptest build: $*" >&2; }

up_to_date() { [ -x "$wrapper" ] && [ "$wrapper" -nt "$tarball" ] && [ -x "$src/src/imaptest" ]; }

mkdir -p "$dir"
up_to_date && exit 0
exec 9>"$dir/.build.lock"
flock 9
up_to_date && exit 0          # another build finished while this one waited

for tool in autoconf automake libtoolize make gcc; do
    command -v "$tool" >/dev/null || { say "$tool missing (scripts/install-deps)"; exit 1; }
done
[ -f "$dovecot/dovecot-config" ] || { say "$dovecot/dovecot-config missing: install dovecot-dev (scripts/install-deps)"; exit 1; }

rm -rf "$src" "$wrapper"
mkdir -p "$src"
# --touch: the current time on every file, so make sees no clock skew
tar -xzf "$tarball" -C "$src" --strip-components=1 --touch

# The tree passes imap_parser_create() the 4th argument Debian 12's
# dovecot-dev 2.3.19.1+dfsg1-2.1+deb12u7 added; older headers take three.
if ! grep -q 'imap_parser_params' /usr/include/dovecot/imap-parser.h 2>/dev/null; then
    say "dovecot-dev without imap_parser_params: the 3-argument imap_parser_create()"
    sed -i 's/imap_parser_create(\([^;]*\), (size_t)-1, NULL)/imap_parser_create(\1, (size_t)-1)/' \
        "$src/src/commands.c" "$src/src/imap-client.c" "$src/src/test-parser.c"
fi

say "building in $src (log: $dir/build.log)"
if ! (cd "$src" && ./autogen.sh && ./configure --with-dovecot="$dovecot/" &&
      make -j"$(nproc 2>/dev/null || echo 2)") >"$dir/build.log" 2>&1; then
    say "failed; the end of $dir/build.log:"
    tail -30 "$dir/build.log" >&2
    exit 1
fi
[ -x "$src/src/imaptest" ] || { say "no binary at $src/src/imaptest"; exit 1; }

cat >"$wrapper.tmp" <<EOW
#!/bin/sh
# imaptest 924f619 with four upstream fixes and a local patch ($src/PROVENANCE)
LD_LIBRARY_PATH=$dovecot\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} exec "$src/src/imaptest" "\$@"
EOW
chmod 755 "$wrapper.tmp"
mv -f "$wrapper.tmp" "$wrapper"
say "built $wrapper"
