# posthorn — GNU Make build.  Out-of-tree: build/release (optimised, used by
# `make run`) and build/asan (AddressSanitizer + UBSan, used by `make check`).

PKGS      := libevent libevent_openssl libssl libcrypto libcares gmime-3.0 libseccomp libsystemd libcurl jansson ldap libpsl zlib
PKGS      += krb5-gssapi krb5
CC        ?= cc
PYTEST    := /usr/bin/python3 -m pytest
BUILD     ?= build

# The layers are folders (docs/architecture.md): src/LAYER/*.c and, for the
# protocols, src/proto/NAME/*.c.
SRC       := $(sort $(wildcard src/*/*.c src/*/*/*.c))
HDR       := $(sort $(wildcard src/*/*.h src/*/*/*.h))
LIBSRC    := $(filter-out src/cli/main.c,$(SRC))
UNITSRC   := $(wildcard tests/unit/test_*.c)

WARN      := -Wall -Wextra -Wformat=2 -Wshadow -Wpointer-arith -Wstrict-prototypes \
             -Wmissing-prototypes -Wvla -Wno-unused-parameter
HARDEN    := -fstack-protector-strong -fPIE -D_FORTIFY_SOURCE=2 -fno-strict-overflow \
             -fstack-clash-protection
HARDEN_LD := -pie -Wl,-z,relro -Wl,-z,now -Wl,-z,noexecstack

BASECFLAGS = -std=gnu11 $(WARN) -Isrc $(shell pkg-config --cflags $(PKGS)) -pthread
BASELIBS   = $(shell pkg-config --libs $(PKGS)) -pthread

RELEASE_CFLAGS := -O2 -g $(HARDEN)
# _FORTIFY_SOURCE needs optimisation; ASan builds use -O1 and keep it.
# `make check` builds with these: warnings are errors there.
ASAN_CFLAGS    := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                  -fno-sanitize-recover=undefined -fstack-protector-strong -fPIE -D_FORTIFY_SOURCE=2 \
                  -Werror
ASAN_LDFLAGS   := -fsanitize=address,undefined -pie -Wl,-z,relro -Wl,-z,now

VERSION   := $(shell cat VERSION 2>/dev/null || echo 0.1.0)
# builds run on every core (a plain `make check` on a clean clone too)
JOBS      := -j$(shell nproc 2>/dev/null || echo 2)

.PHONY: all release asan run check unit integration chaos deps clean help bench bench-quick bench-imap bench-smtp phload \
	fuzz fuzz-build fuzz-bins fuzz-smoke lint lint-files layers install install-files uninstall \
	imaptest-tool imaptest bench-dkim

all: release

help:
	@echo "make run    - install deps, build, start the demo server"
	@echo "make check  - install deps, build with ASan/UBSan, run all tests"
	@echo "make        - optimised build in build/release/"
	@echo "make chaos  - the long fault-survival run (kill -9, full disk, fds, DNS, slow clients)"
	@echo "make bench  - posthorn beside Postfix and Dovecot (~15 min); bench-quick: < 3 min; bench-imap: ~15 min; bench-smtp: SMTP rows only"
	@echo "make fuzz   - run every libFuzzer target FUZZ_SECONDS (default 60) each"
	@echo "make imaptest - Dovecot's imaptest compliance suite against posthorn (~20 s; built from third_party/)"
	@echo "make lint   - cppcheck and clang-tidy over src/"
	@echo "make layers - no include or call goes up a layer, no circle (docs/architecture.md)"
	@echo "make install - the binary, man pages, example configuration and systemd unit (PREFIX, DESTDIR)"

deps:
	@./scripts/install-deps

# ---- generic rules, instantiated for each flavour -------------------------

define flavour
$(1)_OBJ    := $$(patsubst src/%.c,$(BUILD)/$(1)/obj/%.o,$$(SRC))
$(1)_LIBOBJ := $$(patsubst src/%.c,$(BUILD)/$(1)/obj/%.o,$$(LIBSRC))
$(1)_TESTS  := $$(patsubst tests/unit/%.c,$(BUILD)/$(1)/tests/%,$$(UNITSRC))

# Header dependencies come from the compiler (-MMD -MP, the .d files below).
$(BUILD)/$(1)/obj/%.o: src/%.c
	@mkdir -p $$(dir $$@)
	$$(CC) $$(BASECFLAGS) $(2) -DPOSTHORN_VERSION='"$$(VERSION)"' -MMD -MP -c $$< -o $$@

$(BUILD)/$(1)/posthorn: $$($(1)_OBJ)
	$$(CC) $$^ -o $$@ $(3) $$(BASELIBS)

$(BUILD)/$(1)/tests/%: tests/unit/%.c $$($(1)_LIBOBJ) | $(BUILD)/$(1)/tests
	$$(CC) $$(BASECFLAGS) $(2) -Itests/unit -MMD -MP $$< $$($(1)_LIBOBJ) -o $$@ $(3) $$(BASELIBS) \
		$$(shell pkg-config --libs cmocka)

$(BUILD)/$(1)/obj $(BUILD)/$(1)/tests:
	mkdir -p $$@
endef

$(eval $(call flavour,release,$(RELEASE_CFLAGS),$(HARDEN_LD)))
$(eval $(call flavour,asan,$(ASAN_CFLAGS),$(ASAN_LDFLAGS)))

# Extra libraries of single unit test programs (libopendmarc has no .pc file).
$(BUILD)/%/tests/test_dmarc_opendmarc: BASELIBS += -lopendmarc

-include $(wildcard $(BUILD)/*/obj/*.d $(BUILD)/*/obj/*/*.d $(BUILD)/*/obj/*/*/*.d \
	$(BUILD)/*/tests/*.d)

# Builds do not install anything; the two commands below (and bench, fuzz)
# run scripts/install-deps first.
release:
	@$(MAKE) --no-print-directory $(JOBS) $(BUILD)/release/posthorn

asan:
	@$(MAKE) --no-print-directory $(JOBS) $(BUILD)/asan/posthorn $(asan_TESTS) $(BUILD)/asan/testfilter

# The mail filter on libmilter that tests/integration/test_milter.py runs.
$(BUILD)/asan/testfilter: tests/milter/testfilter.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O1 -g $(WARN) -Werror $< -o $@ -lmilter -pthread

# ---- the two commands ----------------------------------------------------

run: deps
	@$(MAKE) --no-print-directory release
	@./scripts/demo $(BUILD)/release/posthorn

unit: asan
	@set -e; n=0; for t in $(asan_TESTS); do echo "== $$t"; $$t; n=$$((n+1)); done; \
	echo "unit: $$n test programs passed"

# In parallel, one worker per core (pytest-xdist); the tests marked
# `exclusive` in tests/integration (multi-second password checks, sub-second
# throttle bounds) run first with nothing else beside them.
integration: asan imaptest-tool
	POSTHORN_BIN=$(abspath $(BUILD))/asan/posthorn POSTHORN_IMAPTEST_DIR=$(abspath $(BUILD))/imaptest \
		$(PYTEST) -q -p no:cacheprovider -n $(shell nproc 2>/dev/null || echo 2) --dist loadgroup \
		tests/integration

# Dovecot's imaptest (third_party/imaptest/README.md), built into
# $(BUILD)/imaptest for the two-node stress test in tests/integration.
IMAPTEST := $(BUILD)/imaptest/imaptest

$(IMAPTEST): third_party/imaptest/imaptest-924f619.tar.gz
	third_party/imaptest/build.sh $(BUILD)/imaptest

imaptest-tool: $(IMAPTEST)

# imaptest's compliance suite against the ASan build: the groups passed,
# failed and skipped (make integration runs the same test).
imaptest: asan imaptest-tool
	POSTHORN_BIN=$(abspath $(BUILD))/asan/posthorn POSTHORN_IMAPTEST_DIR=$(abspath $(BUILD))/imaptest \
		$(PYTEST) -q -s -p no:cacheprovider tests/integration/test_imaptest_compliance.py

# The long fault-survival run (25 kills under load, 2,000 slow clients, the
# Maildir-full retry); `make check` runs the same file as "chaos-lite".
chaos: asan
	POSTHORN_CHAOS=full POSTHORN_BIN=$(abspath $(BUILD))/asan/posthorn timeout 900 \
		$(PYTEST) -q -s -p no:cacheprovider tests/integration/test_chaos.py

# The layer rule (docs/architecture.md) over the ASan build's objects.
layers: asan
	@./scripts/layers $(BUILD)/asan/obj

check: deps
	@$(MAKE) --no-print-directory asan
	@$(MAKE) --no-print-directory layers
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory integration

# ---- the benchmark (method and results: docs/performance.md) -------------

PHLOAD := $(BUILD)/bench/phload

$(PHLOAD): bench/phload.c
	mkdir -p $(dir $@)
	$(CC) $(BASECFLAGS) -O2 -g $< -o $@ $(BASELIBS)

# The daemon for the benchmark's callgrind row only: the release flags with
# the seccomp filter left out (valgrind cannot run under one).
PH_CALLGRIND := $(BUILD)/bench/posthorn-callgrind

$(PH_CALLGRIND): $(SRC) $(HDR)
	mkdir -p $(dir $@)
	$(CC) $(BASECFLAGS) $(RELEASE_CFLAGS) -DPOSTHORN_CALLGRIND_BUILD \
		-DPOSTHORN_VERSION='"$(VERSION)"' $(SRC) -o $@ $(HARDEN_LD) $(BASELIBS)

phload: deps
	@$(MAKE) --no-print-directory $(PHLOAD) $(PH_CALLGRIND)

bench: release phload imaptest-tool
	bench/run.sh full

bench-quick: release phload imaptest-tool
	bench/run.sh quick

bench-imap: release phload imaptest-tool
	bench/run.sh imap

bench-smtp: release phload imaptest-tool
	bench/run.sh smtp

# The cost of DKIM signing per message (bench/dkim-sign.c): a few seconds.
DKIM_BENCH_SRC := bench/dkim-sign.c src/lib/util.c src/lib/strbuf.c \
	$(filter-out src/mailauth/dkim_verify.c,$(wildcard src/mailauth/dkim_*.c))
$(BUILD)/bench/dkim-sign: $(DKIM_BENCH_SRC) $(HDR)
	mkdir -p $(dir $@)
	$(CC) $(BASECFLAGS) $(RELEASE_CFLAGS) $(DKIM_BENCH_SRC) -o $@ $(HARDEN_LD) $(BASELIBS)

bench-dkim: $(BUILD)/bench/dkim-sign
	$(BUILD)/bench/dkim-sign
# ---- fuzzing (libFuzzer, clang) --------------------------------------------
# Every tests/fuzz/fuzz_NAME.c is a target build/fuzz/fuzz_NAME, linked with
# every src/*.c but main.c (compiled again with coverage instrumentation)
# and the shared helpers tests/fuzz/*.c that are not targets themselves.
# Seeds: tests/fuzz/corpus/NAME (read only); what the fuzzer finds goes to
# build/fuzz/corpus/NAME, crashes to build/fuzz/artifacts/NAME/.

FUZZ_CC       ?= clang
FUZZ_SECONDS  ?= 60
FUZZ_SMOKE_SECONDS ?= 3
FUZZ_FLAGS    ?=
FUZZ_SAN      := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS   := -O1 -g -fno-omit-frame-pointer $(FUZZ_SAN) -fsanitize=fuzzer-no-link -DPOSTHORN_FUZZ
FUZZ_LDFLAGS  := $(FUZZ_SAN) -fsanitize=fuzzer
FUZZ_SRC      := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_HELPERS  := $(filter-out $(FUZZ_SRC),$(wildcard tests/fuzz/*.c))
FUZZ_NAMES    := $(patsubst tests/fuzz/fuzz_%.c,%,$(FUZZ_SRC))
FUZZ_BINS     := $(patsubst %,$(BUILD)/fuzz/fuzz_%,$(FUZZ_NAMES))
FUZZ_LIBOBJ   := $(patsubst src/%.c,$(BUILD)/fuzz/obj/%.o,$(LIBSRC))
FUZZ_HELPOBJ  := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/obj/helper_%.o,$(FUZZ_HELPERS))

$(BUILD)/fuzz/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(BASECFLAGS) $(FUZZ_CFLAGS) -DPOSTHORN_VERSION='"$(VERSION)"' -MMD -MP -c $< -o $@

$(BUILD)/fuzz/obj/helper_%.o: tests/fuzz/%.c | $(BUILD)/fuzz/obj
	$(FUZZ_CC) $(BASECFLAGS) $(FUZZ_CFLAGS) -Itests/fuzz -MMD -MP -c $< -o $@

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIBOBJ) $(FUZZ_HELPOBJ) $(wildcard tests/fuzz/*.h)
	$(FUZZ_CC) $(BASECFLAGS) $(FUZZ_CFLAGS) -Itests/fuzz $< $(FUZZ_LIBOBJ) $(FUZZ_HELPOBJ) \
		-o $@ $(FUZZ_LDFLAGS) $(BASELIBS)

$(BUILD)/fuzz/obj:
	mkdir -p $@

.SECONDARY: $(FUZZ_LIBOBJ) $(FUZZ_HELPOBJ)

fuzz-bins: $(FUZZ_BINS)

fuzz-build:
	@$(MAKE) --no-print-directory $(JOBS) -s fuzz-bins

# One target for N seconds: the seeds first (each must pass), then fuzzing.
# One make rule per target, so that `make -jN` runs N of them at once; the
# output of each is printed whole when it ends (--output-sync).
FUZZ_RUN_ONE = mkdir -p $(BUILD)/fuzz/corpus/$(1) $(BUILD)/fuzz/artifacts/$(1); \
	echo "== fuzz_$(1) ($(2) s)"; \
	$(BUILD)/fuzz/fuzz_$(1) -max_total_time=$(2) -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix=$(BUILD)/fuzz/artifacts/$(1)/ $(FUZZ_FLAGS) \
		$(BUILD)/fuzz/corpus/$(1) tests/fuzz/corpus/$(1) 2>$(BUILD)/fuzz/$(1).log \
		|| { tail -n 60 $(BUILD)/fuzz/$(1).log; exit 1; }; \
	grep -E '^stat::number_of_executed_units' $(BUILD)/fuzz/$(1).log | sed 's/^/   /'

FUZZ_SECONDS_RUN ?= $(FUZZ_SMOKE_SECONDS)
fuzz-run-%:
	@$(call FUZZ_RUN_ONE,$*,$(FUZZ_SECONDS_RUN))

FUZZ_RUN = $(MAKE) --no-print-directory $(JOBS) --output-sync=target FUZZ_SECONDS_RUN=$(1) \
	$(patsubst %,fuzz-run-%,$(FUZZ_NAMES))

fuzz: deps fuzz-build
	@$(call FUZZ_RUN,$(FUZZ_SECONDS))

fuzz-smoke: fuzz-build
	@$(call FUZZ_RUN,$(FUZZ_SMOKE_SECONDS))

# ---- static analysis ---------------------------------------------------------
# cppcheck over every src/*.c (suppressions, each with its reason, in
# tests/lint/cppcheck.supp; the "style" class is left out: its findings
# here were false positives about libevent callback signatures and loop
# bounds) and clang-tidy (the checks and why some are off: .clang-tidy),
# one stamp per file so that a second run checks only what changed.  Any
# finding fails the build.

CPPCHECK_FLAGS := --quiet --error-exitcode=1 --inline-suppr --std=c11 \
	--enable=warning,portability,performance \
	--suppressions-list=tests/lint/cppcheck.supp -D__GNUC__ -Isrc \
	--library=posix --template='{file}:{line}: {severity} ({id}): {message}'
TIDY_STAMPS := $(patsubst src/%.c,$(BUILD)/lint/%.tidy,$(SRC))

$(BUILD)/lint/cppcheck.stamp: $(SRC) $(HDR) tests/lint/cppcheck.supp | $(BUILD)/lint
	@echo "== cppcheck"
	@cppcheck $(CPPCHECK_FLAGS) $(SRC)
	@touch $@

$(BUILD)/lint/%.tidy: src/%.c $(HDR) .clang-tidy
	@mkdir -p $(dir $@)
	@echo "== clang-tidy $<"
	@clang-tidy --quiet $< -- $(BASECFLAGS) -DPOSTHORN_VERSION='"$(VERSION)"' >$@.out 2>/dev/null; \
	if grep -qE '(warning|error):' $@.out; then cat $@.out; rm -f $@.out; exit 1; fi; mv $@.out $@

$(BUILD)/lint:
	mkdir -p $@

lint-files: $(BUILD)/lint/cppcheck.stamp $(TIDY_STAMPS)

lint:
	@$(MAKE) --no-print-directory $(JOBS) -s lint-files
	@echo "lint: cppcheck and clang-tidy found nothing"

# ---- install ---------------------------------------------------------------
# `make install` builds the release daemon, then `install-files` copies it,
# the manual pages, the example configuration and the systemd unit (its
# paths filled in).  `install-files INSTALL_BIN=...` installs a daemon
# built elsewhere without building (packaging, tests/integration).

PREFIX     ?= /usr/local
DESTDIR    ?=
SBINDIR    := $(PREFIX)/sbin
MANDIR     := $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
INSTALL_BIN ?= $(BUILD)/release/posthorn

install: release
	@$(MAKE) --no-print-directory install-files

install-files:
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(SYSCONFDIR)/posthorn $(DESTDIR)$(UNITDIR)
	install -m 0755 $(INSTALL_BIN) $(DESTDIR)$(SBINDIR)/posthorn
	install -m 0644 man/posthorn.conf.5 $(DESTDIR)$(MANDIR)/man5/posthorn.conf.5
	install -m 0644 man/posthorn.8 $(DESTDIR)$(MANDIR)/man8/posthorn.8
	install -m 0644 etc/posthorn.conf.example $(DESTDIR)$(SYSCONFDIR)/posthorn/posthorn.conf.example
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
		etc/systemd/posthorn.service.in >$(DESTDIR)$(UNITDIR)/posthorn.service.tmp
	chmod 0644 $(DESTDIR)$(UNITDIR)/posthorn.service.tmp
	mv $(DESTDIR)$(UNITDIR)/posthorn.service.tmp $(DESTDIR)$(UNITDIR)/posthorn.service

# The configuration, users and folders stay: they are the administrator's.
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/posthorn $(DESTDIR)$(MANDIR)/man5/posthorn.conf.5 \
		$(DESTDIR)$(MANDIR)/man8/posthorn.8 $(DESTDIR)$(UNITDIR)/posthorn.service \
		$(DESTDIR)$(SYSCONFDIR)/posthorn/posthorn.conf.example

clean:
	rm -rf $(BUILD)
