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
ARCH    ?= -march=native
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

LIB_SRC  := $(wildcard src/util/*.c src/tensor/*.c src/model/*.c src/server/*.c src/server/*/*.c)
CLI_SRC  := $(wildcard src/cli/*.c)
TEST_SRC := $(wildcard tests/unit/*.c)
FUZZ_SRC := $(filter-out tests/fuzz/fuzz_main.c,$(wildcard tests/fuzz/fuzz_*.c))

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/webpage.o
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

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/obj/bench/sdbench.d

test: all
	BUILD=$(BUILD) ./tests/run.sh

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" test

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
	rm -rf build build-asan build-fuzz

.PHONY: all test asan fuzz clean install uninstall
