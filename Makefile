# ustack top-level build. `make` builds everything; `make test` runs every suite (plain,
# and ASan+UBSan builds) plus a bounded fuzzing run, and fails on any failure.

CC       ?= gcc
SAN_CC   ?= gcc
FUZZ_CC  ?= clang
BUILD    ?= build
WARN     := -std=c11 -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wstrict-prototypes
CFLAGS   ?= -O2 -g
BASE_CFLAGS := $(WARN) -D_DEFAULT_SOURCE -fPIC -Istack
SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck)
FUZZ_SECONDS ?= 30

STACK_SRC   := $(wildcard stack/*.c)
STACK_HDR   := $(wildcard stack/*.h)
TESTLIB_SRC := $(wildcard tests/lib/*.c)
TESTLIB_HDR := $(wildcard tests/lib/*.h)
TEST_SRC    := $(wildcard tests/test_*.c)
FUZZ_SRC    := $(wildcard tests/fuzz/fuzz_*.c)

STACK_OBJ     := $(STACK_SRC:%.c=$(BUILD)/%.o)
STACK_SAN_OBJ := $(STACK_SRC:%.c=$(BUILD)/san/%.o)
TESTS         := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
SAN_TESTS     := $(TEST_SRC:tests/%.c=$(BUILD)/san/tests/%)
FUZZERS       := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)

.PHONY: all test check unit san-test fuzz-run deps format format-check bench-engine clean
BENCHES := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/bench_engine.c))
all: $(BUILD)/libstk.a $(TESTS) $(BENCHES)

deps:
	@tools/deps.sh

$(BUILD)/stack/%.o: stack/%.c $(STACK_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/san/stack/%.o: stack/%.c $(STACK_HDR)
	@mkdir -p $(dir $@)
	$(SAN_CC) $(BASE_CFLAGS) $(SAN_FLAGS) -c $< -o $@

$(BUILD)/libstk.a: $(STACK_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/san/libstk.a: $(STACK_SAN_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/tests/%: tests/%.c $(TESTLIB_SRC) $(TESTLIB_HDR) $(BUILD)/libstk.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -Itests/lib $< $(TESTLIB_SRC) $(BUILD)/libstk.a $(CHECK_LIBS) -lm -o $@

$(BUILD)/san/tests/%: tests/%.c $(TESTLIB_SRC) $(TESTLIB_HDR) $(BUILD)/san/libstk.a
	@mkdir -p $(dir $@)
	$(SAN_CC) $(BASE_CFLAGS) $(SAN_FLAGS) -Itests/lib $< $(TESTLIB_SRC) $(BUILD)/san/libstk.a $(CHECK_LIBS) -lm -o $@

$(BUILD)/fuzz/%: tests/fuzz/%.c $(STACK_SRC) $(STACK_HDR) $(TESTLIB_SRC) $(TESTLIB_HDR)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(BASE_CFLAGS) -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Itests/lib $< $(STACK_SRC) $(TESTLIB_SRC) -lm -o $@

$(BUILD)/bench/bench_engine: bench/bench_engine.c $(TESTLIB_SRC) $(TESTLIB_HDR) $(BUILD)/libstk.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -O2 -g -D_GNU_SOURCE -Itests/lib $< $(TESTLIB_SRC) $(BUILD)/libstk.a -lm -o $@

unit: $(TESTS)
	@tools/run-tests $(TESTS)

san-test: $(SAN_TESTS)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 tools/run-tests $(SAN_TESTS)

fuzz-run: $(FUZZERS)
	@tools/run-fuzz $(FUZZ_SECONDS) $(FUZZERS)

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory san-test
	@$(MAKE) --no-print-directory fuzz-run
	@$(MAKE) --no-print-directory layering-check format-check
	@echo "make test: all suites passed"

check: test

# stack/ and shim/ must never include DPDK (DESIGN.md section 1).
layering-check:
	@! grep -rn '#include <rte_' stack shim preload 2>/dev/null || { echo "DPDK header outside dpdk_io/"; exit 1; }

bench-engine: $(BUILD)/bench/bench_engine
	$(BUILD)/bench/bench_engine

FORMAT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(FORMAT_FILES)
format-check:
	@clang-format --dry-run -Werror $(FORMAT_FILES) && echo "format-check: ok"

clean:
	rm -rf $(BUILD)
