# errgroup - see README.md.  `make V=1` shows the commands.

VERSION_MAJOR = 1
VERSION       = $(VERSION_MAJOR).0.0
PREFIX       ?= /usr/local
DESTDIR      ?=
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
BINDIR       ?= $(PREFIX)/bin
MANDIR       ?= $(PREFIX)/share/man

CC      ?= cc
CFLAGS  ?= -O2 -g
WARN     = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wformat=2 -Wno-format-nonliteral $(if $(CI),-Werror)
CFLAGS_AUTO = -std=gnu11 -Iinclude -pthread $(WARN)
LDLIBS_AUTO = -pthread

# Packages the build and the tests need; make installs the missing ones.
DEPS = libbsd-dev libcmocka-dev valgrind pkg-config

B = build
LIB_SRCS   := $(sort $(wildcard supervisor/*.c))
LIB_OBJS   := $(LIB_SRCS:supervisor/%.c=$(B)/pic/%.o)
TEST_SRCS  := $(sort $(wildcard tests/test_*.c))
TESTS      := $(TEST_SRCS:tests/%.c=$(B)/tests/%) $(B)/tests/test_cost_shared
EXAMPLES   := $(patsubst examples/%.c,$(B)/examples/%,$(sort $(wildcard examples/*.c)))
CLI_SRCS   := $(sort $(wildcard cli/*.c))
CLI_OBJS   := $(CLI_SRCS:cli/%.c=$(B)/cli/%.o)

STATIC   = $(B)/liberrgroup.a
INTERNAL = $(B)/liberrgroup-internal.a
SONAME = liberrgroup.so.$(VERSION_MAJOR)
SHARED = $(B)/liberrgroup.so.$(VERSION)

ifeq ($(V),1)
Q =
else
Q = @
endif

.DELETE_ON_ERROR:
.PHONY: all deps check memcheck demo install uninstall clean

all: $(STATIC) $(SHARED) $(EXAMPLES) $(B)/errgroup

deps:
	$(Q)tools/deps.sh $(DEPS)

# -fno-plt: a child's first call to a libc function the parent never made
# would otherwise go through the lazy binder and write the GOT (a page
# fault and a symbol lookup per child, ~20 µs: docs/benchmarks.md).
# -fno-lto, after CFLAGS: the archive's ld -r and objcopy need machine
# code, not the compiler's intermediate code.
$(B)/pic/%.o: supervisor/%.c supervisor/internal.h include/errgroup.h
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_AUTO) -fPIC -fno-plt -fvisibility=hidden $(CFLAGS) -fno-lto -c -o $@ $<

# The archive holds one object in which only the API is global: a program
# linked statically may well define a channel_open or a now_ns of its own,
# and met the library's (the shared library hides them with its map).
# The compiler's own linker and objcopy, which a cross compiler names.
OBJCOPY ?= $(shell $(CC) -print-prog-name=objcopy)
$(B)/liberrgroup.o: $(LIB_OBJS)
	@$(if $(Q),echo "  LD -r   $@")
	$(Q)$(CC) -nostdlib -r -o $@ $^
	$(Q)$(OBJCOPY) --localize-hidden $@

$(STATIC): $(B)/liberrgroup.o
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && $(AR) rcs $@ $<

# The tests reach internal pieces (the frame decoder, the probes): they
# link the objects as they are.
$(INTERNAL): $(LIB_OBJS)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(SHARED): $(LIB_OBJS) supervisor/liberrgroup.map
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=supervisor/liberrgroup.map \
		$(CFLAGS) $(LDFLAGS) -o $@ $(LIB_OBJS) $(LDLIBS_AUTO)
	$(Q)ln -sf liberrgroup.so.$(VERSION) $(B)/$(SONAME)
	$(Q)ln -sf $(SONAME) $(B)/liberrgroup.so

$(B)/examples/%: examples/%.c $(STATIC) include/errgroup.h
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_AUTO) $(CFLAGS) $(LDFLAGS) -o $@ $< $(STATIC) $(LDLIBS_AUTO)

# The errgroup command, on the public API only (no -Isupervisor).
$(B)/cli/%.o: cli/%.c cli/cli.h include/errgroup.h
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_AUTO) -DERRGROUP_VERSION='"$(VERSION)"' $(CFLAGS) -c -o $@ $<

$(B)/errgroup: $(CLI_OBJS) $(STATIC)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJS) $(STATIC) -lm $(LDLIBS_AUTO)

# Tests link the library's objects, so that they can reach internal
# pieces (the frame decoder) as well as the API.
$(B)/tests/%: tests/%.c tests/helpers.h $(INTERNAL) include/errgroup.h
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_AUTO) -Isupervisor $(CFLAGS) $(LDFLAGS) -o $@ $< $(INTERNAL) -lcmocka $(LDLIBS_AUTO)

# It counts faults in children: nothing may be bound lazily there.  Also
# built against the shared library, which most programs link.
$(B)/tests/test_cost: LDFLAGS += -Wl,-z,now
$(B)/tests/test_cost_shared: tests/test_cost.c tests/helpers.h $(SHARED) include/errgroup.h
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $< (shared)")
	$(Q)$(CC) $(CFLAGS_AUTO) $(CFLAGS) $(LDFLAGS) -Wl,-z,now -o $@ $< -L$(B) \
		-Wl,-rpath,$(abspath $(B)) -lerrgroup -lcmocka $(LDLIBS_AUTO)

# It checks every call that makes, uses or closes a pidfd: the library's
# calls go through its wrappers.
$(B)/tests/test_pidfd_use: LDFLAGS += $(foreach f,pidfd_open close pidfd_send_signal waitid \
	ioctl epoll_ctl fcntl,-Wl,--wrap=$(f))

# It answers the library's PIDFD_GET_INFO as the kernel does in the moment
# between a pidfd turning readable and the exit status being recorded.
$(B)/tests/test_exit_status: LDFLAGS += -Wl,--wrap=ioctl

# It fails the library's large allocations and its threads at will.
$(B)/tests/test_pressure: LDFLAGS += -Wl,--wrap=malloc -Wl,--wrap=pthread_create

# It holds the library's pidfd probe at its signal while another thread
# forks, and fails or holds its first mappings and advice.
$(B)/tests/test_first_use: LDFLAGS += -Wl,--wrap=pidfd_send_signal -Wl,--wrap=mmap \
	-Wl,--wrap=madvise

# The main job: checksum this tree's sources, each file in its own child,
# then again with a file missing, to show the fail-fast stop.
demo: deps
	$(Q)$(MAKE) --no-print-directory all
	$(B)/examples/checksum supervisor/*.c include/errgroup.h
	-$(B)/examples/checksum supervisor/*.c /nonexistent/file

# Each test binary runs twice: with pidfds, and with the fallback that
# old kernels, seccomp sandboxes and valgrind get; those that test what a
# child inherits run a third time without MADV_WIPEONFORK (run-tests.sh).
check: deps
	$(Q)$(MAKE) --no-print-directory all $(TESTS)
	$(Q)tools/install-test.sh
	$(Q)tools/run-tests.sh $(TESTS)
	$(Q)tests/cli/run.sh $(B)/errgroup

memcheck: deps
	$(Q)$(MAKE) --no-print-directory all $(TESTS)
	$(Q)tools/memcheck.sh $(TESTS)

install: all
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1
	install -m 755 $(B)/errgroup $(DESTDIR)$(BINDIR)/
	install -m 644 docs/errgroup.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 include/errgroup.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(SHARED) $(DESTDIR)$(LIBDIR)/
	ln -sf liberrgroup.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/liberrgroup.so
	# Written here, for the PREFIX of this install, not the build's; paths
	# under the prefix are written from ${prefix}, so that a tree that is
	# moved (pkg-config --define-prefix) still finds itself.
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))|' \
		-e 's|@INCLUDEDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))|' \
		-e 's|@VERSION@|$(VERSION)|' \
		errgroup.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/errgroup.pc

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/errgroup.h \
		$(DESTDIR)$(BINDIR)/errgroup \
		$(DESTDIR)$(MANDIR)/man1/errgroup.1 \
		$(DESTDIR)$(LIBDIR)/liberrgroup.a \
		$(DESTDIR)$(LIBDIR)/liberrgroup.so.$(VERSION) \
		$(DESTDIR)$(LIBDIR)/$(SONAME) \
		$(DESTDIR)$(LIBDIR)/liberrgroup.so \
		$(DESTDIR)$(LIBDIR)/pkgconfig/errgroup.pc

# Benchmarks, not part of check (docs/benchmarks.md).  They build their own
# copy of the library in $(BENCH_B), always at -O2, whatever CFLAGS the
# main build used.  bench-syscalls needs perf or strace.
# The programs bind every symbol at load (-z now): otherwise the bare
# loop's child binds _exit itself, about 8 page faults, or not, depending
# on how the library happens to refer to _exit (docs/benchmarks.md).
BENCH_B = $(B)/bench-O2
BENCH_LDFLAGS = -Wl,-z,now
.PHONY: bench bench-syscalls bench-build

bench-build: $(STATIC) $(B)/bench/bench $(B)/bench/children $(B)/bench/orphans \
	$(B)/bench/helpers

$(B)/bench/%: bench/%.c $(STATIC) include/errgroup.h
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_AUTO) $(CFLAGS) $(LDFLAGS) $(BENCH_LDFLAGS) -o $@ $< $(STATIC) $(LDLIBS_AUTO)

# The second children run is meant to fail (the fds run out): it shows how.
# The orphans runs time the orphan kill in a small host, then in big ones.
bench:
	$(Q)$(MAKE) --no-print-directory B=$(BENCH_B) CFLAGS='-O2 -g' bench-build
	$(BENCH_B)/bench/bench
	$(BENCH_B)/bench/helpers
	$(BENCH_B)/bench/children 5000
	$(BENCH_B)/bench/children --fd-limit 1024 1000 || true
	$(BENCH_B)/bench/orphans
	$(BENCH_B)/bench/orphans --host-mib 256 --rounds 10 1 100
	$(BENCH_B)/bench/orphans --host-mib 1024 --rounds 10 --kinds cmd 1

bench-syscalls:
	$(Q)$(MAKE) --no-print-directory B=$(BENCH_B) CFLAGS='-O2 -g' bench-build
	bench/syscalls.sh $(BENCH_B)/bench/bench

clean:
	rm -rf $(B)

# Hostile input: the frame decoder under libFuzzer, and the whole suite
# under sanitizers, each built in its own directory inside $(B).
#   make fuzz   clang's libFuzzer, with ASan and UBSan, on frame_decode()
#               for FUZZ_SECONDS; a crash or a broken invariant stops it,
#               exits nonzero and leaves the input in $(B)/fuzz/.  The
#               seeds in tests/fuzz/corpus are only read; what the fuzzer
#               finds goes to $(B)/fuzz/corpus.  FUZZ_MAX_LEN is above
#               FRAME_MAX (65 616), so both sides of that bound are tried.
#   make asan   the suite built with ASan + UBSan (the command's tests
#               too: a leak or a report fails its status check),
#   make tsan   and with TSan, each run by tools/sanitize.sh, which says
#               why each runtime option is set.
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_MAX_LEN  = 66000
ASAN_CFLAGS   = -fsanitize=address,undefined -fno-omit-frame-pointer
TSAN_CFLAGS   = -fsanitize=thread
SAN_TESTS     = $(TESTS:$(B)/%=%)
.PHONY: fuzz asan tsan

$(B)/fuzz/fuzz_frame: tests/fuzz/fuzz_frame.c supervisor/frame.c supervisor/internal.h include/errgroup.h
	@mkdir -p $(@D)
	@$(if $(Q),echo "  FUZZCC  $<")
	$(Q)$(FUZZ_CC) $(CFLAGS_AUTO) -Isupervisor -g -O1 -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=all -o $@ tests/fuzz/fuzz_frame.c supervisor/frame.c

fuzz:
	$(Q)tools/deps.sh clang
	$(Q)$(MAKE) --no-print-directory $(B)/fuzz/fuzz_frame
	@mkdir -p $(B)/fuzz/corpus
	$(Q)$(B)/fuzz/fuzz_frame -max_total_time=$(FUZZ_SECONDS) -max_len=$(FUZZ_MAX_LEN) \
		-artifact_prefix=$(B)/fuzz/ $(B)/fuzz/corpus tests/fuzz/corpus

asan: deps
	$(Q)$(MAKE) --no-print-directory B=$(B)/asan CFLAGS="$(CFLAGS) $(ASAN_CFLAGS)" \
		all $(SAN_TESTS:%=$(B)/asan/%)
	$(Q)tools/sanitize.sh asan $(SAN_TESTS:%=$(B)/asan/%)
	$(Q)UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 tests/cli/run.sh $(B)/asan/errgroup

# A fork under TSan took 9 ms here, and test_pressure's pid-reuse test
# forks until the pid counter comes round (up to pid_max, 32 768 here):
# up to 300 s for that test alone, check's whole limit for a binary.
tsan: deps
	$(Q)$(MAKE) --no-print-directory B=$(B)/tsan CFLAGS="$(CFLAGS) $(TSAN_CFLAGS)" \
		all $(SAN_TESTS:%=$(B)/tsan/%)
	$(Q)ERRGROUP_TEST_TIMEOUT=1200 tools/sanitize.sh tsan $(SAN_TESTS:%=$(B)/tsan/%)

# Long runs of the stress tests, not part of check: 24 rounds of the
# accounting stress instead of 3, and 20 000 children of the threaded
# host instead of 2 000, in both pidfd modes.  Each mode may take an hour
# before run-tests.sh calls it a hang, not check's 5 minutes: the time is
# forks, and a fork costs 50 us on some machines and 800 us on others
# (both modes took 28 minutes on a 2-core VM of the second kind).
.PHONY: stress
stress: deps
	$(Q)$(MAKE) --no-print-directory $(B)/tests/test_stress
	$(Q)ERRGROUP_STRESS=1 ERRGROUP_TEST_TIMEOUT=3600 tools/run-tests.sh $(B)/tests/test_stress
