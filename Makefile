# diffusiond - build, test, sanitize, fuzz.
#
#   make                 build/diffusiond (release, -O2)
#   make test            unit + parity + CLI + HTTP tests
#   make asan            the whole suite under address + undefined sanitizers
#   make fuzz            libFuzzer targets (clang) in build-fuzz/
#   make CC=clang        any target with clang
#   make install         PREFIX=/usr/local, DESTDIR= (staging)
#
# Dependencies (Debian): see tools/install-deps.sh.

CC      ?= gcc
BUILD   ?= build
OPT     ?= -O2
# The build machine does not matter: everything is built for any x86-64,
# and the compute kernels once per instruction set level (below), chosen
# at run time by what the CPU reports. ARCH=-march=native still works.
UNAME_M := $(shell uname -m)
ifeq ($(UNAME_M),x86_64)
ARCH    ?= -march=x86-64 -mtune=generic
else
ARCH    ?=
endif
SAN     ?=

PKGS    := jansson libpng libjpeg zlib minizip libmicrohttpd sqlite3 hiredis libcurl libcrypto
CFLAGS  := -std=c11 $(OPT) -g $(ARCH) -Wall -Wextra -Werror -Wshadow \
           -Wno-unused-parameter -D_GNU_SOURCE -fopenmp -Isrc \
           -ffp-contract=off $(SAN) $(shell pkg-config --cflags $(PKGS))
LDLIBS  := $(shell pkg-config --libs $(PKGS)) -ldnnl -lunistring -lpthread -lm
LDFLAGS := -fopenmp $(SAN)

GIT_DESC := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
$(BUILD)/obj/src/cli/main.o: CFLAGS += -DDIFFUSIOND_GIT='"$(GIT_DESC)"'

# Tensor kernels may fuse multiply-adds; model and scheduler code may not
# (bit-exact parity with PyTorch's float32 arithmetic).
$(BUILD)/obj/src/tensor/%.o: CFLAGS += -ffp-contract=fast

# The compute kernels: compiled once per level, each copy under names of its
# own (src/tensor/kernel_names.h); src/tensor/kernels.c picks one at start-up.
KERNEL_SRC := src/tensor/attention.c src/tensor/attention_lanes.c src/tensor/attention_lanes32.c src/tensor/gemm_bf16.c src/tensor/gemm_f32.c \
              src/tensor/onednn.c src/tensor/ops_cpu.c src/tensor/winograd.c
ifeq ($(UNAME_M),x86_64)
KLEVELS := baseline avx2 avx512 avx512bf16
$(BUILD)/obj/src/tensor/kernels.o: CFLAGS += -DSD_KLEVELS_X86
KFLAGS_baseline   := -march=x86-64
else
KLEVELS := baseline
KFLAGS_baseline   :=
endif
KFLAGS_avx2       := -march=x86-64-v3
KFLAGS_avx512     := -march=x86-64-v4
KFLAGS_avx512bf16 := -march=x86-64-v4 -mavx512bf16
KERNEL_OBJ := $(foreach L,$(KLEVELS),$(KERNEL_SRC:%.c=$(BUILD)/obj/k/$(L)/%.o))

# vmath.h's AVX-512 code, tested where the CPU has it.
ifeq ($(UNAME_M),x86_64)
$(BUILD)/obj/tests/unit/test_vmath_avx512.o: CFLAGS += $(KFLAGS_avx512bf16)
endif

define KERNEL_RULE
$$(BUILD)/obj/k/$(1)/%.o: %.c src/tensor/kernel_names.h
	@mkdir -p $$(@D)
	$$(CC) $$(CFLAGS) -ffp-contract=fast $$(KFLAGS_$(1)) -DSD_KLEVEL=$(1) \
	    -include src/tensor/kernel_names.h -MMD -MP -c -o $$@ $$<
endef
$(foreach L,$(KLEVELS),$(eval $(call KERNEL_RULE,$(L))))

LIB_SRC  := $(filter-out $(KERNEL_SRC),$(wildcard src/util/*.c src/tensor/*.c src/model/*.c \
            src/server/*.c src/server/*/*.c))
CLI_SRC  := $(wildcard src/cli/*.c)
TEST_SRC := $(wildcard tests/unit/*.c)
FUZZ_SRC := $(filter-out tests/fuzz/fuzz_main.c,$(wildcard tests/fuzz/fuzz_*.c))

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(KERNEL_OBJ) $(BUILD)/obj/gen/webpage.o
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/obj/%.o)

all: $(BUILD)/diffusiond $(BUILD)/unit_tests $(BUILD)/fuzz_replay $(BUILD)/sdbench

$(BUILD)/libdiffusiond.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	@rm -f $@ # ar would keep members of files since renamed
	$(AR) rcs $@ $^

$(BUILD)/diffusiond: $(CLI_OBJ) $(BUILD)/libdiffusiond.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/unit_tests: $(TEST_OBJ) $(BUILD)/libdiffusiond.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Developer tool: cross-checks and timings on real model folders (bench/).
$(BUILD)/sdbench: $(BUILD)/obj/bench/sdbench.o $(BUILD)/libdiffusiond.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Replays every fuzz target's corpus without libFuzzer (part of `make test`).
$(BUILD)/fuzz_replay: $(FUZZ_SRC) tests/fuzz/fuzz_main.c $(BUILD)/libdiffusiond.a
	$(CC) $(CFLAGS) -Itests/fuzz -DFUZZ_REPLAY $(LDFLAGS) -o $@ tests/fuzz/fuzz_main.c \
	    $(BUILD)/libdiffusiond.a $(LDLIBS)

# The web page (src/server/api/page.html) as the C string webpage_html.
$(BUILD)/gen/webpage.c: src/server/api/page.html
	@mkdir -p $(@D)
	@{ echo '/* Generated from src/server/api/page.html by the Makefile. */'; \
	   echo 'const char webpage_html[] ='; \
	   sed 's/\\/\\\\/g; s/"/\\"/g; s/^/    "/; s/$$/\\n"/' $<; echo ';'; } > $@

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

# Objects are rebuilt when the compiler or its flags change (a build
# directory switched from ARCH=-march=native to the portable default must
# not keep objects with instructions the target may lack).
FLAGS_STAMP := $(BUILD)/.flags
$(FLAGS_STAMP): FORCE
	@mkdir -p $(@D)
	@echo '$(CC) $(CFLAGS)' | cmp -s - $@ || echo '$(CC) $(CFLAGS)' > $@
FORCE:
$(LIB_OBJ) $(CLI_OBJ) $(TEST_OBJ) $(BUILD)/obj/bench/sdbench.o: $(FLAGS_STAMP)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/obj/bench/sdbench.d

test: all
	BUILD=$(BUILD) ./tests/run.sh

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" test

# ThreadSanitizer over the service: the HTTP API suite, on SQLite and on
# Redis, against a server built with -fsanitize=thread. A data race makes
# the server exit 66, which fails the test that stops it. One OpenMP thread:
# libgomp is not instrumented, and inference's threads are not the
# service's (the unit tests cover those kernels).
tsan:
	$(MAKE) BUILD=build-tsan OPT=-O1 SAN="-fsanitize=thread" build-tsan/diffusiond
	OMP_NUM_THREADS=1 python3 tests/http/test_http.py --binary build-tsan/diffusiond
	if command -v redis-server >/dev/null; then \
	    OMP_NUM_THREADS=1 DIFFUSIOND_TEST_STORE=redis \
	    python3 tests/http/test_http.py --binary build-tsan/diffusiond; fi

# libFuzzer binaries, one per target: build-fuzz/fuzz_<name>
fuzz:
	$(MAKE) CC=clang BUILD=build-fuzz OPT=-O1 \
	    SAN="-fsanitize=fuzzer-no-link,address,undefined -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION" \
	    build-fuzz/libdiffusiond.a
	@for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  echo "clang $$n"; \
	  clang -std=c11 -g -O1 -Isrc -D_GNU_SOURCE -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION \
	    -fsanitize=fuzzer,address,undefined -fopenmp \
	    -o build-fuzz/$$n $$f build-fuzz/libdiffusiond.a $(LDLIBS) || exit 1; done

# Install: the binary, the data it reads at run time (standard configs,
# tokenizer vocabularies, the small default model) and the man page.
PREFIX  ?= /usr/local
DESTDIR ?=
SHARE   := $(DESTDIR)$(PREFIX)/share/diffusiond
install: $(BUILD)/diffusiond
	install -d $(DESTDIR)$(PREFIX)/bin $(SHARE)/models $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 $(BUILD)/diffusiond $(DESTDIR)$(PREFIX)/bin/diffusiond
	cp -R data/configs data/tokenizers $(SHARE)/
	install -m 644 data/README.md $(SHARE)/README.md
	rm -rf $(SHARE)/models/tiny-sd1 && cp -R tests/data/tiny-sd1 $(SHARE)/models/tiny-sd1
	install -m 644 docs/diffusiond.1 $(DESTDIR)$(PREFIX)/share/man/man1/diffusiond.1

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/diffusiond $(DESTDIR)$(PREFIX)/share/man/man1/diffusiond.1
	rm -rf $(SHARE)

clean:
	rm -rf build build-asan build-tsan build-fuzz

.PHONY: all test asan tsan fuzz clean install uninstall FORCE
