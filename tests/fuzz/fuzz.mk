# tests/fuzz/fuzz.mk: the libFuzzer harnesses of tests/fuzz/ (issue 9).
# Included by the top-level Makefile; until then it also works as
#   make -f Makefile -f tests/fuzz/fuzz.mk fuzz-regress
#
#   make fuzz            build, then run each harness for FUZZ_SECONDS (60) of
#                        wall time, one after the other; print executions and
#                        CPU seconds per harness, and "no finding" or the crash
#   make fuzz-regress    build, then run each harness once over its committed
#                        corpus (tests/fuzz/corpus/NAME/); fails on any crash
#   make fuzz-seeds      regenerate the vault seeds with the code itself
#   FUZZ_TARGETS="smtp_data config" narrows either run to some harnesses.
#
# The code under test is compiled again here, into $(FUZZ_BUILD)/obj/, with
# coverage instrumentation and ASan + UBSan; each harness links only the
# objects it needs. New inputs found by `make fuzz` go to
# $(FUZZ_BUILD)/corpus/NAME/, never into the committed seeds; crashes to
# $(FUZZ_BUILD)/crashes/NAME/.

# Remember whether a goal was chosen already: this file must not become the
# default goal wherever it is included (restored at the end).
FUZZ_SAVED_GOAL := $(.DEFAULT_GOAL)

FUZZ_CC       ?= clang-14
FUZZ_BUILD    ?= build-fuzz
FUZZ_SECONDS  ?= 60
FUZZ_DIR      := tests/fuzz
FUZZ_PKGS     := libsodium libevent libbsd jansson inih openssl
FUZZ_SAN      := -fsanitize=address,undefined -fno-sanitize-recover=all \
                 -fno-omit-frame-pointer
FUZZ_CFLAGS   ?= -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Wno-unused-parameter \
                 -Ivault -Iproxy -Iadmin \
                 $(shell pkg-config --cflags $(FUZZ_PKGS) 2>/dev/null) \
                 -DSMTPVAULT_VERSION='"fuzz"'
FUZZ_LIBS     := $(shell pkg-config --libs $(FUZZ_PKGS) 2>/dev/null)

FUZZ_HARNESSES := smtp_parse smtp_path smtp_data smtp_reply config msg_header \
                  vault_payload vault_file admin_json admin_query admin_request relay_link
FUZZ_TARGETS  ?= $(FUZZ_HARNESSES)

# The objects each harness needs (sources without .c).
FUZZ_VAULT := vault/vault vault/vault_account vault/vault_admin vault/vault_payload \
              vault/vault_secret
FUZZ_OBJS_smtp_parse    := proxy/smtp_parse
FUZZ_OBJS_smtp_path     := proxy/smtp_parse proxy/routing proxy/config proxy/util
FUZZ_OBJS_smtp_data     := proxy/smtp_data proxy/msg_header
FUZZ_OBJS_smtp_reply    := proxy/smtp_reply
FUZZ_OBJS_config        := proxy/config proxy/util
FUZZ_OBJS_msg_header    := proxy/msg_header
FUZZ_OBJS_vault_payload := $(FUZZ_VAULT)
FUZZ_OBJS_vault_file    := $(FUZZ_VAULT)
# The admin routes on the fake server of fuzz_admin.h (no libmicrohttpd).
FUZZ_ADMIN := admin/admin_api admin/admin_reply admin/admin_util admin/admin_session \
              proxy/util proxy/log vault/vault_secret tests/fuzz/fuzz_admin_fake
FUZZ_OBJS_admin_json    := $(FUZZ_ADMIN)
FUZZ_OBJS_admin_query   := $(FUZZ_ADMIN)
FUZZ_OBJS_admin_request := $(FUZZ_ADMIN)
# The relay side's SUBMIT decoder; relay.c's three neighbours are stubs there.
FUZZ_OBJS_relay_link    := proxy/relay_link proxy/ipc proxy/log proxy/util

FUZZ_HDRS := $(wildcard vault/*.h proxy/*.h admin/*.h $(FUZZ_DIR)/*.h)
FUZZ_BINS := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)

.PHONY: fuzz fuzz-build fuzz-check-cc fuzz-regress fuzz-seeds fuzz-clean

# Code under test: coverage-instrumented, no libFuzzer main.
$(FUZZ_BUILD)/obj/%.o: %.c $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c -o $@ $<

define FUZZ_HARNESS_RULE
$(FUZZ_BUILD)/fuzz_$(1): $(FUZZ_DIR)/fuzz_$(1).c $(FUZZ_HDRS) \
    $(FUZZ_OBJS_$(1):%=$(FUZZ_BUILD)/obj/%.o)
	@mkdir -p $$(dir $$@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Werror $(FUZZ_SAN) -fsanitize=fuzzer -o $$@ $$< \
	    $(FUZZ_OBJS_$(1):%=$(FUZZ_BUILD)/obj/%.o) $(FUZZ_LIBS)
endef
$(foreach h,$(FUZZ_HARNESSES),$(eval $(call FUZZ_HARNESS_RULE,$(h))))

fuzz-build: fuzz-check-cc $(FUZZ_BINS)

# libFuzzer comes with clang; on Debian 12: apt-get install clang-14 libclang-rt-14-dev
fuzz-check-cc:
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || { echo "fuzz: $(FUZZ_CC) not found;" \
	    "install clang-14 and libclang-rt-14-dev (or set FUZZ_CC)" >&2; exit 1; }

fuzz: fuzz-build
	@$(FUZZ_DIR)/run.sh fuzz $(FUZZ_SECONDS) $(FUZZ_BUILD) $(FUZZ_TARGETS)

fuzz-regress: fuzz-build
	@$(FUZZ_DIR)/run.sh regress $(FUZZ_BUILD) $(FUZZ_TARGETS)

# The seed generator runs the real vault code (create, add, rotate, save) to
# make valid vault files and payloads under the fixed fuzzing key.
$(FUZZ_BUILD)/seedgen: $(FUZZ_DIR)/seedgen.c $(FUZZ_HDRS) \
    $(FUZZ_VAULT:%=$(FUZZ_BUILD)/obj/%.o)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Werror $(FUZZ_SAN) -fsanitize=fuzzer-no-link -o $@ $< \
	    $(FUZZ_VAULT:%=$(FUZZ_BUILD)/obj/%.o) $(FUZZ_LIBS)

fuzz-seeds: $(FUZZ_BUILD)/seedgen
	$(FUZZ_BUILD)/seedgen $(FUZZ_DIR)/corpus

fuzz-clean:
	rm -rf $(FUZZ_BUILD)

ifeq ($(FUZZ_SAVED_GOAL),)
.DEFAULT_GOAL :=
endif
