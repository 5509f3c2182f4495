# smtpvault build: one binary, build/smtpvault, plus the test programs.
# `make` builds, `make test` runs every suite, `make run` starts the dev daemon.

PREFIX   ?= /usr/local
DESTDIR  ?=
BUILD    ?= build
CC       ?= cc

# Install locations. logrotate reads only /etc/logrotate.d, whatever PREFIX;
# systemd also searches /usr/local/lib/{systemd/system,sysusers.d,tmpfiles.d}.
SBINDIR     ?= $(PREFIX)/sbin
MANDIR      ?= $(PREFIX)/share/man
DOCDIR      ?= $(PREFIX)/share/doc/smtpvault
SYSCONFDIR  ?= /etc
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
INSTALLED   := $(SBINDIR)/smtpvault $(MANDIR)/man8/smtpvault.8 $(MANDIR)/man5/smtpvault.conf.5 \
               $(UNITDIR)/smtpvault.service $(SYSUSERSDIR)/smtpvault.conf \
               $(TMPFILESDIR)/smtpvault.conf $(SYSCONFDIR)/logrotate.d/smtpvault \
               $(DOCDIR)/smtpvault.conf.example

PKGS     := libsodium openssl libevent libevent_openssl libmicrohttpd jansson inih libbsd libseccomp
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN     := -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wpointer-arith -Wstrict-prototypes \
            -Wmissing-prototypes -Wno-unused-parameter
HARDEN   := -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE
OPT      ?= -O2 -g
CFLAGS   ?=
CFLAGS   += -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) $(HARDEN) -Ivault -Iproxy -Iadmin $(PKG_CFLAGS)
LDFLAGS  += -pie -Wl,-z,relro,-z,now
LDLIBS   += $(PKG_LIBS) -lpthread

VERSION  := 0.1.0
CFLAGS   += -DSMTPVAULT_VERSION='"$(VERSION)"'

LIB_SRC  := $(wildcard vault/*.c) $(filter-out proxy/main.c,$(wildcard proxy/*.c)) $(wildcard admin/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
LIB_OBJ  += $(BUILD)/obj/admin_assets.o
MAIN_OBJ := $(BUILD)/obj/proxy/main.o
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all deps test unit integration asan run install uninstall clean bench-vault bench-audit \
	bench bench-queue

all: $(BUILD)/smtpvault

$(BUILD)/obj/%.o: %.c $(wildcard vault/*.h proxy/*.h admin/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

# The admin page (admin/assets/*) embedded in the binary as C arrays.
ASSETS   := $(sort $(wildcard admin/assets/*))
$(BUILD)/admin_assets.c: admin/embed.sh $(ASSETS)
	@mkdir -p $(dir $@)
	sh admin/embed.sh $@ $(ASSETS)

$(BUILD)/obj/admin_assets.o: $(BUILD)/admin_assets.c admin/admin_internal.h admin/admin.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libsmtpvault.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/smtpvault: $(MAIN_OBJ) $(BUILD)/libsmtpvault.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libsmtpvault.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libsmtpvault.a $(LDLIBS) -lcmocka

# Install missing Debian packages when run as root, otherwise print the apt-get line.
deps:
	@tests/deps.sh

unit: $(BUILD)/smtpvault $(UNIT_BIN)
	@tests/run-unit.sh $(UNIT_BIN)

integration: $(BUILD)/smtpvault
	@tests/run-integration.sh $(BUILD)/smtpvault

ASAN_OPT := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
ASAN_MAKE = $(MAKE) --no-print-directory BUILD=build-asan CC=clang OPT="$(ASAN_OPT)" \
	    LDFLAGS="-fsanitize=address,undefined"

# Every suite: normal build, ASan+UBSan build, valgrind, fuzz corpora.
test: deps
	@$(MAKE) --no-print-directory all $(UNIT_BIN)
	@$(ASAN_MAKE) all $(UNIT_SRC:tests/unit/%.c=build-asan/tests/%)
	@tests/test-all.sh

# Only the unit and integration tests against an ASan+UBSan build in build-asan/.
asan: deps
	@$(ASAN_MAKE) all $(UNIT_SRC:tests/unit/%.c=build-asan/tests/%)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    tests/run-all.sh build-asan

run: deps
	@$(MAKE) --no-print-directory all
	@deploy/dev/run.sh $(BUILD)/smtpvault

bench-vault: all
	@tests/bench/vault.sh $(BUILD)/smtpvault

bench-audit: all
	@tests/bench/audit.sh $(BUILD)/smtpvault

# smtpvault against Postfix (tests/bench/run.sh, as root, 10-15 minutes; not
# part of `make test`). The sink and the load generator need only libevent
# and OpenSSL.
BENCH_PKGS := libevent libevent_openssl openssl
$(BUILD)/bench/%: tests/bench/%.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) $(shell pkg-config --cflags $(BENCH_PKGS)) \
	    -o $@ $< $(shell pkg-config --libs $(BENCH_PKGS)) -lm

bench: all $(BUILD)/bench/sink $(BUILD)/bench/loadgen
	@tests/bench/run.sh $(BUILD)

# delivery = queue: durable throughput and final-dot-to-250 latency with 50
# concurrent clients, against Postfix in the same run (as root, ~5 minutes;
# not part of `make test`).
bench-queue: all $(BUILD)/bench/sink $(BUILD)/bench/loadgen
	@tests/bench/queue.sh $(BUILD)

# The unit names the binary as /usr/sbin/smtpvault; it is rewritten to SBINDIR.
install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
	    $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
	    $(DESTDIR)$(SYSCONFDIR)/logrotate.d $(DESTDIR)$(DOCDIR)
	install -m 0755 $(BUILD)/smtpvault $(DESTDIR)$(SBINDIR)/smtpvault
	install -m 0644 deploy/man/smtpvault.8 $(DESTDIR)$(MANDIR)/man8/smtpvault.8
	install -m 0644 deploy/man/smtpvault.conf.5 $(DESTDIR)$(MANDIR)/man5/smtpvault.conf.5
	sed 's|/usr/sbin/smtpvault|$(SBINDIR)/smtpvault|g' deploy/systemd/smtpvault.service \
	    > $(DESTDIR)$(UNITDIR)/smtpvault.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/smtpvault.service
	install -m 0644 deploy/systemd/smtpvault.sysusers $(DESTDIR)$(SYSUSERSDIR)/smtpvault.conf
	install -m 0644 deploy/systemd/smtpvault.tmpfiles $(DESTDIR)$(TMPFILESDIR)/smtpvault.conf
	install -m 0644 deploy/logrotate/smtpvault $(DESTDIR)$(SYSCONFDIR)/logrotate.d/smtpvault
	install -m 0644 deploy/smtpvault.conf.example $(DESTDIR)$(DOCDIR)/smtpvault.conf.example

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	-rmdir $(DESTDIR)$(DOCDIR)

# libFuzzer harnesses: `make fuzz` (FUZZ_SECONDS each, default 60) and
# `make fuzz-regress` (every committed seed once; part of `make test`).
include tests/fuzz/fuzz.mk

clean:
	rm -rf build build-asan build-fuzz
