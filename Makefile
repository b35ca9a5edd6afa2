# posthorn — GNU Make build.  Out-of-tree: build/release (optimised, used by
# `make run`) and build/asan (AddressSanitizer + UBSan, used by `make check`).

PKGS      := libevent libevent_openssl libssl libcrypto libcares gmime-3.0 libseccomp
CC        ?= cc
PYTEST    := /usr/bin/python3 -m pytest
BUILD     ?= build

SRC       := $(wildcard src/*.c)
LIBSRC    := $(filter-out src/main.c,$(SRC))
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
ASAN_CFLAGS    := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                  -fno-sanitize-recover=undefined -fstack-protector-strong -fPIE -D_FORTIFY_SOURCE=2
ASAN_LDFLAGS   := -fsanitize=address,undefined -pie -Wl,-z,relro -Wl,-z,now

VERSION   := $(shell cat VERSION 2>/dev/null || echo 0.1.0)

.PHONY: all release asan run check unit integration chaos deps clean help bench bench-quick phload

all: release

help:
	@echo "make run    - install deps, build, start the demo server"
	@echo "make check  - install deps, build with ASan/UBSan, run all tests"
	@echo "make        - optimised build in build/release/"
	@echo "make chaos  - the long fault-survival run (kill -9, full disk, fds, DNS, slow clients)"
	@echo "make bench  - posthorn beside Postfix (~15 min); bench-quick: < 2 min"

deps:
	@./scripts/install-deps

# ---- generic rules, instantiated for each flavour -------------------------

define flavour
$(1)_OBJ    := $$(patsubst src/%.c,$(BUILD)/$(1)/obj/%.o,$$(SRC))
$(1)_LIBOBJ := $$(patsubst src/%.c,$(BUILD)/$(1)/obj/%.o,$$(LIBSRC))
$(1)_TESTS  := $$(patsubst tests/unit/%.c,$(BUILD)/$(1)/tests/%,$$(UNITSRC))

$(BUILD)/$(1)/obj/%.o: src/%.c $$(wildcard src/*.h) | $(BUILD)/$(1)/obj
	$$(CC) $$(BASECFLAGS) $(2) -DPOSTHORN_VERSION='"$$(VERSION)"' -MMD -c $$< -o $$@

$(BUILD)/$(1)/posthorn: $$($(1)_OBJ)
	$$(CC) $$^ -o $$@ $(3) $$(BASELIBS)

$(BUILD)/$(1)/tests/%: tests/unit/%.c $$($(1)_LIBOBJ) | $(BUILD)/$(1)/tests
	$$(CC) $$(BASECFLAGS) $(2) -Itests/unit $$< $$($(1)_LIBOBJ) -o $$@ $(3) $$(BASELIBS) \
		$$(shell pkg-config --libs cmocka)

$(BUILD)/$(1)/obj $(BUILD)/$(1)/tests:
	mkdir -p $$@
endef

$(eval $(call flavour,release,$(RELEASE_CFLAGS),$(HARDEN_LD)))
$(eval $(call flavour,asan,$(ASAN_CFLAGS),$(ASAN_LDFLAGS)))

-include $(wildcard $(BUILD)/*/obj/*.d)

release: deps
	@$(MAKE) --no-print-directory $(BUILD)/release/posthorn

asan: deps
	@$(MAKE) --no-print-directory $(BUILD)/asan/posthorn $(asan_TESTS)

# ---- the two commands ----------------------------------------------------

run: release
	@./scripts/demo $(BUILD)/release/posthorn

unit: asan
	@set -e; n=0; for t in $(asan_TESTS); do echo "== $$t"; $$t; n=$$((n+1)); done; \
	echo "unit: $$n test programs passed"

integration: asan
	POSTHORN_BIN=$(abspath $(BUILD))/asan/posthorn $(PYTEST) -q -p no:cacheprovider tests/integration

# The long fault-survival run (25 kills under load, 2,000 slow clients, the
# Maildir-full retry); `make check` runs the same file as "chaos-lite".
chaos: asan
	POSTHORN_CHAOS=full POSTHORN_BIN=$(abspath $(BUILD))/asan/posthorn timeout 900 \
		$(PYTEST) -q -s -p no:cacheprovider tests/integration/test_chaos.py

check: asan
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory integration

# ---- the benchmark (bench/README in README.md "Performance") -------------

PHLOAD := $(BUILD)/bench/phload

$(PHLOAD): bench/phload.c
	mkdir -p $(dir $@)
	$(CC) $(BASECFLAGS) -O2 -g $< -o $@ $(BASELIBS)

phload: deps
	@$(MAKE) --no-print-directory $(PHLOAD)

bench: release phload
	bench/run.sh full

bench-quick: release phload
	bench/run.sh quick

clean:
	rm -rf $(BUILD)
