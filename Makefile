# smtpvault build: one binary, build/smtpvault, plus the test programs.
# `make` builds, `make test` runs every suite, `make run` starts the dev daemon.

PREFIX   ?= /usr/local
DESTDIR  ?=
BUILD    ?= build
CC       ?= cc

PKGS     := libsodium openssl libevent libevent_openssl libmicrohttpd jansson inih libbsd
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

.PHONY: all deps test unit integration asan run install uninstall clean bench-vault bench-audit

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

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory $(UNIT_BIN)
	@tests/run-all.sh $(BUILD)

# The same unit and integration tests against an ASan+UBSan build in build-asan/.
asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan CC=clang \
	    OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	    LDFLAGS="-fsanitize=address,undefined" all
	@$(MAKE) --no-print-directory BUILD=build-asan CC=clang \
	    OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	    LDFLAGS="-fsanitize=address,undefined" \
	    $(UNIT_SRC:tests/unit/%.c=build-asan/tests/%)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    tests/run-all.sh build-asan

run: deps
	@$(MAKE) --no-print-directory all
	@deploy/dev/run.sh $(BUILD)/smtpvault

bench-vault: all
	@tests/bench/vault.sh $(BUILD)/smtpvault

bench-audit: all
	@tests/bench/audit.sh $(BUILD)/smtpvault

install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 0755 $(BUILD)/smtpvault $(DESTDIR)$(PREFIX)/sbin/smtpvault
	install -m 0644 deploy/man/smtpvault.8 $(DESTDIR)$(PREFIX)/share/man/man8/smtpvault.8
	install -m 0644 deploy/man/smtpvault.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/smtpvault.conf.5
	install -d $(DESTDIR)$(PREFIX)/share/doc/smtpvault
	install -m 0644 deploy/smtpvault.conf.example $(DESTDIR)$(PREFIX)/share/doc/smtpvault/smtpvault.conf.example

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/sbin/smtpvault $(DESTDIR)$(PREFIX)/share/man/man8/smtpvault.8 \
	      $(DESTDIR)$(PREFIX)/share/man/man5/smtpvault.conf.5 \
	      $(DESTDIR)$(PREFIX)/share/doc/smtpvault/smtpvault.conf.example
	-rmdir $(DESTDIR)$(PREFIX)/share/doc/smtpvault

clean:
	rm -rf build build-asan
