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
SHIM_SRC    := $(wildcard shim/*.c)
SHIM_HDR    := $(wildcard shim/*.h)
# What both ends share (configuration, the region's primitives); the client side of the
# shim (the rest of shim/) goes only into libustack.so.
SHIM_CORE_SRC := shim/conf.c shim/shm.c shim/log.c
# Suites that link DPDK are built by their own rules (and not under the sanitizers).
DIO_TEST_SRC := $(wildcard tests/test_dio.c tests/test_shmsrv.c)
TEST_SRC    := $(filter-out $(DIO_TEST_SRC),$(wildcard tests/test_*.c))
DPDK_CFLAGS := $(shell pkg-config --cflags libdpdk 2>/dev/null)
DPDK_LIBS   := $(shell pkg-config --libs libdpdk 2>/dev/null) -lrte_net_ring -lnuma
DIO_SRC     := $(filter-out dpdk_io/ustackd.c,$(wildcard dpdk_io/*.c))
DIO_HDR     := $(wildcard dpdk_io/*.h)
DIO_OBJ     := $(DIO_SRC:%.c=$(BUILD)/%.o)
SHIM_OBJ_ALL = $(SHIM_CORE_SRC:%.c=$(BUILD)/%.o)
DIO_CFLAGS  := $(BASE_CFLAGS) -D_GNU_SOURCE -Ishim -Idpdk_io $(DPDK_CFLAGS)
FUZZ_SRC    := $(wildcard tests/fuzz/fuzz_*.c)
SEM_SRC     := $(wildcard tests/sem/sem_*.c)
SEM_BINS    := $(SEM_SRC:tests/sem/%.c=$(BUILD)/sem/%)

STACK_OBJ     := $(STACK_SRC:%.c=$(BUILD)/%.o)
STACK_SAN_OBJ := $(STACK_SRC:%.c=$(BUILD)/san/%.o)
TESTS         := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
SAN_TESTS     := $(TEST_SRC:tests/%.c=$(BUILD)/san/tests/%)
FUZZERS       := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)

.PHONY: all test check unit san-test fuzz-run net-test net-san-test soak sem sem-test sem-san-test deps format format-check bench-engine bench-veth bench bench-quick bench-check bench-reflect bench-wake demo clean
BENCHES := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/bench_engine.c))
DIO_TESTS := $(DIO_TEST_SRC:tests/%.c=$(BUILD)/tests/%)
# libustack.so: the interposer (preload/) and the client side of the shim (shim/). It exports
# only the POSIX names (version script) and never links DPDK.
PRELOAD_SRC := $(wildcard preload/*.c)
PRELOAD_HDR := $(wildcard preload/*.h)
PRELOAD_SO  := $(if $(PRELOAD_SRC),$(BUILD)/libustack.so)
$(BUILD)/libustack.so: $(PRELOAD_SRC) $(PRELOAD_HDR) $(SHIM_SRC) $(SHIM_HDR) $(wildcard preload/*.map)
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -D_GNU_SOURCE -fPIC -shared -fvisibility=hidden $(CFLAGS) -Istack -Ishim -Ipreload \
		$(PRELOAD_SRC) $(SHIM_SRC) -Wl,--version-script=preload/libustack.map -Wl,-z,defs \
		-ldl -lpthread -o $@

# The same library and ustackd built with ASan+UBSan, for `make sem-san-test`. The library
# is loaded into programs that are not built with ASan, so its runtime must come first in
# LD_PRELOAD (SAN_RT); ustackd links it as usual. libustack.so is spawned-ustackd's
# neighbour: build/san/ustackd runs under build/san/libustack.so.
SAN_RT := $(shell $(SAN_CC) -print-file-name=libasan.so)
SAN_DIO_OBJ := $(DIO_SRC:%.c=$(BUILD)/san/%.o) $(SHIM_CORE_SRC:%.c=$(BUILD)/san/%.o)
$(BUILD)/san/libustack.so: $(PRELOAD_SRC) $(PRELOAD_HDR) $(SHIM_SRC) $(SHIM_HDR) $(wildcard preload/*.map)
	@mkdir -p $(dir $@)
	$(SAN_CC) $(WARN) -D_GNU_SOURCE -fPIC -shared -fvisibility=hidden $(SAN_FLAGS) -Istack -Ishim -Ipreload \
		$(PRELOAD_SRC) $(SHIM_SRC) -Wl,--version-script=preload/libustack.map -Wl,-z,defs \
		-ldl -lpthread -o $@
$(BUILD)/san/shim/%.o: shim/%.c $(SHIM_HDR)
	@mkdir -p $(dir $@)
	$(SAN_CC) $(BASE_CFLAGS) $(SAN_FLAGS) -Ishim -c $< -o $@
$(BUILD)/san/dpdk_io/%.o: dpdk_io/%.c $(DIO_HDR) $(STACK_HDR) $(SHIM_HDR)
	@mkdir -p $(dir $@)
	$(SAN_CC) $(DIO_CFLAGS) $(SAN_FLAGS) -c $< -o $@
$(BUILD)/san/ustackd: $(BUILD)/san/dpdk_io/ustackd.o $(SAN_DIO_OBJ) $(BUILD)/san/libstk.a
	$(SAN_CC) $(SAN_FLAGS) $^ $(DPDK_LIBS) -lm -o $@

# Kernel-side tools: the reference server and the load generator/verifier.
BENCH_TOOLS := $(BUILD)/bench/kserve $(BUILD)/bench/loadgen $(BUILD)/bench/udprr $(BUILD)/bench/reflect
all: $(BUILD)/libstk.a $(TESTS) $(DIO_TESTS) $(BUILD)/ustackd $(PRELOAD_SO) $(BENCHES) $(BENCH_TOOLS) $(SEM_BINS) $(BUILD)/tests/scribble $(BUILD)/tests/relay $(BUILD)/tests/gonote $(BUILD)/tests/cnote

deps:
	@tools/deps.sh

$(BUILD)/stack/%.o: stack/%.c $(STACK_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/san/stack/%.o: stack/%.c $(STACK_HDR)
	@mkdir -p $(dir $@)
	$(SAN_CC) $(BASE_CFLAGS) $(SAN_FLAGS) -c $< -o $@

$(BUILD)/shim/%.o: shim/%.c $(SHIM_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -Ishim -c $< -o $@

$(BUILD)/dpdk_io/%.o: dpdk_io/%.c $(DIO_HDR) $(STACK_HDR) $(SHIM_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(DIO_CFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/libdio.a: $(DIO_OBJ) $(SHIM_OBJ_ALL)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/ustackd: $(BUILD)/dpdk_io/ustackd.o $(BUILD)/libdio.a $(BUILD)/libstk.a
	$(CC) $^ $(DPDK_LIBS) -lm -o $@

$(BUILD)/tests/test_dio: tests/test_dio.c $(BUILD)/libdio.a $(BUILD)/libstk.a
	@mkdir -p $(dir $@)
	$(CC) $(DIO_CFLAGS) $(CFLAGS) $< $(BUILD)/libdio.a $(BUILD)/libstk.a $(CHECK_LIBS) $(DPDK_LIBS) -lm -o $@

$(BUILD)/tests/test_shmsrv: tests/test_shmsrv.c $(BUILD)/libdio.a $(BUILD)/libstk.a
	@mkdir -p $(dir $@)
	$(CC) $(DIO_CFLAGS) $(CFLAGS) $< $(BUILD)/libdio.a $(BUILD)/libstk.a $(CHECK_LIBS) $(DPDK_LIBS) -lm -o $@

$(BUILD)/libstk.a: $(STACK_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/san/libstk.a: $(STACK_SAN_OBJ)
	rm -f $@ && ar rcs $@ $^

# test_client.c includes the client's sources, so every shim/*.c is a prerequisite.
$(BUILD)/tests/%: tests/%.c $(TESTLIB_SRC) $(TESTLIB_HDR) $(SHIM_SRC) $(SHIM_HDR) $(BUILD)/libstk.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -Itests/lib -Ishim $< $(TESTLIB_SRC) $(SHIM_CORE_SRC) $(BUILD)/libstk.a $(CHECK_LIBS) -lm -o $@

# test_fdtab.c checks preload/hooks.h against the version script.
$(BUILD)/tests/test_fdtab $(BUILD)/san/tests/test_fdtab: preload/hooks.h preload/libustack.map

$(BUILD)/san/tests/%: tests/%.c $(TESTLIB_SRC) $(TESTLIB_HDR) $(SHIM_SRC) $(SHIM_HDR) $(BUILD)/san/libstk.a
	@mkdir -p $(dir $@)
	$(SAN_CC) $(BASE_CFLAGS) $(SAN_FLAGS) -Itests/lib -Ishim $< $(TESTLIB_SRC) $(SHIM_CORE_SRC) $(BUILD)/san/libstk.a $(CHECK_LIBS) -lm -o $@

$(BUILD)/fuzz/%: tests/fuzz/%.c $(STACK_SRC) $(STACK_HDR) $(TESTLIB_SRC) $(TESTLIB_HDR)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(BASE_CFLAGS) -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Itests/lib $< $(STACK_SRC) $(TESTLIB_SRC) -lm -o $@

$(BUILD)/bench/bench_engine: bench/bench_engine.c $(TESTLIB_SRC) $(TESTLIB_HDR) $(BUILD)/libstk.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -O2 -g -D_GNU_SOURCE -Itests/lib $< $(TESTLIB_SRC) $(BUILD)/libstk.a -lm -o $@

# A misbehaving preloaded client for tests/net/test_scribble.sh.
$(BUILD)/tests/scribble: tests/net/helpers/scribble.c shim/shm.c $(SHIM_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -D_GNU_SOURCE -O2 -g -Ishim $< shim/shm.c -o $@

# The impairing Ethernet relay between two veths for tests/net/test_faults.sh.
$(BUILD)/tests/relay: tests/net/helpers/relay.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -D_GNU_SOURCE -O2 -g $< -o $@

# A C program with and without a Go executable's build-ID note (tests/net/test_preload.sh).
$(BUILD)/tests/gonote $(BUILD)/tests/cnote: tests/net/helpers/gonote.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -D_GNU_SOURCE -O2 -g $(if $(findstring gonote,$@),-DGO_NOTE) $< -o $@

# The raw reflector (bench/reflect.sh): DPDK and nothing of ustack.
$(BUILD)/bench/reflect: bench/reflect.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -D_GNU_SOURCE -O2 -g $(DPDK_CFLAGS) $< $(DPDK_LIBS) -o $@

$(BUILD)/bench/kserve $(BUILD)/bench/loadgen $(BUILD)/bench/udprr: $(BUILD)/bench/%: bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -D_GNU_SOURCE -O2 -g -pthread $< -lm -o $@

# The soak programs (tests/soak): a client and an echo server for the idle-connection soak
# (plain POSIX, run on the kernel or under libustack.so) and the engine driver for valgrind.
SOAK_BINS := $(BUILD)/soak_conn_client $(BUILD)/soak_echo_server $(BUILD)/soak_engine_conns
$(BUILD)/soak_conn_client $(BUILD)/soak_echo_server: $(BUILD)/soak_%: tests/soak/%.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror $< -o $@
$(BUILD)/soak_engine_conns: tests/soak/engine_conns.c $(TESTLIB_SRC) $(TESTLIB_HDR) $(BUILD)/libstk.a
	$(CC) $(BASE_CFLAGS) -O1 -g -Itests/lib $< $(TESTLIB_SRC) $(BUILD)/libstk.a -lm -o $@

# Long runs outside `make test` (root, ~15 minutes; tests/soak/run.sh, docs/reliability.md):
# nginx under ab -n 200000 -c 10000, 19,960 idle connections with memory per connection,
# valgrind leak checks, and each fuzzer for SOAK_FUZZ_SECONDS (300); then the fault profiles at
# full size (tests/net/test_faults.sh with NET_FAULTS_SOAK=1: 100 MiB in every profile, more
# requests), bounded by 1800 s; then the semantic suite and the network tests under ASan+UBSan
# (sem-san-test, net-san-test).
SOAK_FUZZ_SECONDS ?= 300
soak: all $(SOAK_BINS) $(FUZZERS) $(BUILD)/san/libustack.so $(BUILD)/san/ustackd
	@rc=0; SOAK_FUZZ_SECONDS=$(SOAK_FUZZ_SECONDS) tests/soak/run.sh $(FUZZERS) || rc=1; \
	NET_FAULTS_SOAK=1 NET_TEST_TIMEOUT=1800 tests/net/run-all.sh faults || rc=1; \
	$(MAKE) --no-print-directory sem-san-test || rc=1; \
	$(MAKE) --no-print-directory net-san-test || rc=1; exit $$rc

# Network tests (root): ustackd against the kernel through veth pairs in namespaces.
net-test: $(BUILD)/ustackd $(BUILD)/bench/loadgen $(BUILD)/tests/scribble $(BUILD)/tests/relay $(BUILD)/tests/gonote $(BUILD)/tests/cnote
	@tests/net/run-all.sh

# Socket-semantics programs (tests/sem): run on the kernel (proving every expectation is the
# kernel's own behaviour) and, once libustack.so serves them, on ustack.
$(BUILD)/sem/%: tests/sem/%.c tests/sem/sem.h
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Werror -pthread $< -o $@
sem: $(SEM_BINS)
sem-test: $(SEM_BINS) $(PRELOAD_SO) $(BUILD)/ustackd
	@SEM_BIN=$(CURDIR)/$(BUILD)/sem tests/sem/run.sh $(if $(PRELOAD_SO),--ustack $(PRELOAD_SO))

# The semantic suite (ustack mode only) against the ASan+UBSan library and ustackd (part of
# `make soak`, ~2 minutes plus the build). A UBSan finding aborts the process
# (-fno-sanitize-recover=all), which fails its case or program (run.sh prints its stderr);
# ASan reports of the programs and of ustackd go to log files (log_path), and any such
# file fails the run even if every case passed. Leak detection is off: the programs are
# not ours, and the client's leaks are checked by valgrind in `make soak`.
SAN_LOGS := $(BUILD)/san/sem-logs
sem-san-test: $(SEM_BINS) $(BUILD)/san/libustack.so $(BUILD)/san/ustackd
	@rm -rf $(SAN_LOGS) && mkdir -p $(SAN_LOGS)
	@rc=0; SEM_BIN=$(CURDIR)/$(BUILD)/sem SEM_PRELOAD=$(SAN_RT) \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:log_path=$(CURDIR)/$(SAN_LOGS)/asan \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	tests/sem/run.sh --no-kernel --ustack $(BUILD)/san/libustack.so || rc=1; \
	if ls $(SAN_LOGS)/* >/dev/null 2>&1; then \
		echo "sem-san-test: sanitizer reports:"; head -n 60 $(SAN_LOGS)/*; rc=1; fi; \
	exit $$rc

# The network tests against the ASan+UBSan library and ustackd (part of `make soak`, not of
# `make test`: every test of tests/net by default, ~15 minutes). The programs under test are not built with ASan: the runtime
# goes first in their LD_PRELOAD (NET_SAN_RT), then libsanfix.so (tests/net/helpers/sanfix.c:
# without it curl and dnsmasq hang at start-up inside the runtime's own
# initialisation). First a start-up check of those programs with the runtime, then the tests
# in NET_SAN_TESTS (docs/testing.md); any ASan report (log_path) fails the run. Smaller loads
# (ab: 2000 requests in test_active, 5000 in test_nginx, 4000 and 2500 with 200 at a time
# in test_workers, whose accept_mutex workers retry every 20 ms; 2000 and 3000 short
# connections in test_twocore; 90 s for test_preload's passive run): under ASan each new connection's 256 KiB buffers are mmap'd and unmapped by
# the sanitizer's allocator, about 20x slower per connection. A 16 MiB quarantine, not
# ASan's 256 MiB: whenever the quarantine overflows, the freeing thread unmaps a tenth of it
# at once (~100 such buffers by default), which stalled ustackd's core threads for
# 150-380 ms on the loaded VM, long enough for spurious RTOs (docs/reliability.md).
SANFIX := $(BUILD)/san/libsanfix.so
$(SANFIX): tests/net/helpers/sanfix.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -O2 -fPIC -shared $< -o $@
# Every tests/net test by default (as `make net-test`); NET_SAN_TESTS="echo frag" for a subset.
NET_SAN_TESTS ?= $(patsubst tests/net/test_%.sh,%,$(sort $(wildcard tests/net/test_*.sh)))
NET_SAN_LOGS := $(BUILD)/san/net-logs
net-san-test: $(BUILD)/san/libustack.so $(BUILD)/san/ustackd $(SANFIX) $(BUILD)/bench/loadgen $(BUILD)/tests/scribble $(BUILD)/tests/relay $(BUILD)/tests/gonote $(BUILD)/tests/cnote
	@rm -rf $(NET_SAN_LOGS) && mkdir -p $(NET_SAN_LOGS)
	@rc=0; export NET_SAN_RT=$(SAN_RT):$(CURDIR)/$(SANFIX) LIBUSTACK=$(CURDIR)/$(BUILD)/san/libustack.so \
	USTACKD=$(CURDIR)/$(BUILD)/san/ustackd \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:quarantine_size_mb=16:log_path=$(CURDIR)/$(NET_SAN_LOGS)/asan \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	NET_ACTIVE_REQS=2000 NET_NGINX_REQS=5000 NET_PRELOAD_PASSIVE_SECS=90 \
	NET_WORKERS_REQS=4000 NET_WORKERS_MUTEX_DELAY=20ms NET_WORKERS_SIDE_REQS=2500 NET_WORKERS_CONC=200 NET_TWOCORE_CRR=2000 NET_TWOCORE_CRR_XDP=3000; \
	for p in curl dnsmasq; do command -v $$p >/dev/null || continue; \
		LD_PRELOAD=$$NET_SAN_RT:$$LIBUSTACK USTACK=0 timeout 20 $$p --version >/dev/null 2>&1 \
			|| { echo "net-san-test: $$p --version under the ASan runtime failed or hung"; rc=1; }; \
	done; \
	[ $$rc = 0 ] && { tests/net/run-all.sh $(NET_SAN_TESTS) || rc=1; }; \
	if ls $(NET_SAN_LOGS)/* >/dev/null 2>&1; then \
		echo "net-san-test: sanitizer reports:"; head -n 60 $(NET_SAN_LOGS)/*; rc=1; fi; \
	exit $$rc

unit: $(TESTS) $(DIO_TESTS)
	@tools/run-tests $(TESTS) $(DIO_TESTS)

san-test: $(SAN_TESTS)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 tools/run-tests $(SAN_TESTS)

fuzz-run: $(FUZZERS)
	@tools/run-fuzz $(FUZZ_SECONDS) $(FUZZERS)

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory san-test
	@$(MAKE) --no-print-directory fuzz-run
	@$(MAKE) --no-print-directory net-test
	@$(MAKE) --no-print-directory sem-test
	@$(MAKE) --no-print-directory layering-check format-check
	@echo "make test: all suites passed"

check: test

# stack/ and shim/ must never include DPDK (DESIGN.md section 1).
layering-check:
	@! grep -rn '#include <rte_' stack shim preload 2>/dev/null || { echo "DPDK header outside dpdk_io/"; exit 1; }
	@if [ -f $(BUILD)/libustack.so ]; then ! ldd $(BUILD)/libustack.so | grep -q librte_ || { echo "libustack.so links DPDK"; exit 1; }; fi

# The main job (README): installs what is missing, builds, runs stock nginx on ustack and on
# the kernel under ab, prints both with the ratio. Root. DEMO_ARGS=--quick for a short run.
# deps and the build run as separate makes: DPDK's flags come from pkg-config when the
# Makefile is read, so the build must start after the packages are installed.
demo:
	@tools/deps.sh
	@$(MAKE) --no-print-directory all
	bench/demo.sh $(DEMO_ARGS)

# ustackd against the kernel over a veth (root); BENCH_ARGS=--quick for a smoke run.
bench-veth: $(BUILD)/ustackd $(BUILD)/bench/kserve $(BUILD)/bench/loadgen
	bench/veth.sh $(BENCH_ARGS)

# The benchmark suite (bench/run.sh, root): nginx, ab and wrk, kserve and loadgen on ustack
# and on the kernel over a veth, results in bench/results/. `make bench` (both stack-core
# counts, 2 rounds; under 15 minutes) and `make bench-quick` (1 round, 1 core; under 2).
# Never part of `make test`. BENCH_ARGS adds options (see bench/run.sh --help).
BENCH_DEPS := $(BUILD)/ustackd $(PRELOAD_SO) $(BUILD)/bench/kserve $(BUILD)/bench/loadgen
bench: $(BENCH_DEPS)
	bench/run.sh --cores 1,2 $(BENCH_ARGS)
bench-quick: $(BENCH_DEPS)
	bench/run.sh --quick $(BENCH_ARGS)

# Cheap checks of the benchmark scripts (no network, no root): syntax, shellcheck when
# installed, the report generator's self-test.
bench-check:
	@for f in bench/*.sh; do bash -n "$$f" || exit 1; done
	@if command -v shellcheck >/dev/null 2>&1; then shellcheck -x bench/*.sh; else echo "bench-check: shellcheck not installed, skipped"; fi
	@python3 -B -c 'import ast, sys; [ast.parse(open(f).read(), f) for f in sys.argv[1:]]' bench/report.py bench/uclient.py
	@python3 -B bench/report.py --self-test
	@bench/run.sh --help >/dev/null
	@echo "bench-check: ok"

# The floor under ustack (bench/reflect.sh, root): a DPDK reflector with no stack vs the
# kernel's UDP on the same veth. BENCH_ARGS adds options (--rounds, --seconds, --ustack).
bench-reflect: $(BUILD)/bench/reflect $(BUILD)/bench/udprr
	bench/reflect.sh $(BENCH_ARGS)

# The first frame after a pause (bench/wake.sh, root): ping round trips to ustackd on AF_XDP
# and AF_PACKET, the stack core asleep before each, beside the kernel's. BENCH_ARGS adds
# options (--rounds, --count, --gap).
bench-wake: $(BUILD)/ustackd
	bench/wake.sh $(BENCH_ARGS)

bench-engine: $(BUILD)/bench/bench_engine
	$(BUILD)/bench/bench_engine

FORMAT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(FORMAT_FILES)
format-check:
	@clang-format --dry-run -Werror $(FORMAT_FILES) && echo "format-check: ok"

clean:
	rm -rf $(BUILD)
