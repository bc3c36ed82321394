#!/bin/sh
# Runs test binaries built with a sanitizer through run-tests.sh (both
# pidfd modes, under timeouts), and fails if any process wrote a report.
# Usage: tools/sanitize.sh asan|tsan TEST...
#
# Tasks are forked children: a report written in one would only change
# that task's exit status, which a test that expects the task to fail
# could take for the failure it expected.  So every report goes to a file
# in a fresh directory (log_path, one file per reporting process, none
# when all is well), and any file there fails the run, whoever wrote it.
#
# asan (ASan + UBSan):
#   detect_leaks=1      LSan checks the test process at exit.  Tasks leave
#                       with _exit(), which runs no leak check, so the
#                       parent heap they inherited is not reported.
#   halt_on_error=1     UB stops the process, like an ASan error.  The
#                       build leaves UB checks recoverable so that this
#                       and the suppressions below apply.
#   suppressions        tests/ubsan.supp: tasks that crash on purpose by
#                       storing through NULL; the library is still checked.
#   use_sigaltstack=0   A thread ended by pthread_cancel leaves the shadow
#                       of the frames it unwound poisoned, and ASan's own
#                       sigaltstack call at the thread's end then reports a
#                       stack-buffer-underflow (google/sanitizers#1399):
#                       test_threads cancels threads in go() and wait().
#                       The alternate stack only serves ASan's report of a
#                       stack overflow, which no test makes.
# tsan:
#   die_after_fork=0    The library forks from threaded processes by design
#                       (the supervisor thread, threaded hosts).  In such a
#                       child TSan stops checking anyway (it cannot trust
#                       locks held at the fork); the default only adds a
#                       kill if the task starts threads of its own, as a
#                       task running a group with cancel-on-error does.
#                       Children of a single-threaded test stay checked.
#   second_deadlock_stack=1  both stacks of a lock-order inversion.
set -u
kind=$1
shift
reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
common="print_stacktrace=1:log_path=$reports/report"
case $kind in
asan)
	ASAN_OPTIONS="detect_leaks=1:use_sigaltstack=0:$common"
	UBSAN_OPTIONS="halt_on_error=1:suppressions=$(pwd)/tests/ubsan.supp:$common"
	export ASAN_OPTIONS UBSAN_OPTIONS
	;;
tsan)
	TSAN_OPTIONS="die_after_fork=0:second_deadlock_stack=1:$common"
	export TSAN_OPTIONS
	;;
*)
	echo "usage: $0 asan|tsan TEST..." >&2
	exit 2
	;;
esac
fail=0
tools/run-tests.sh "$@" || fail=1
for report in "$reports"/report*; do
	[ -e "$report" ] || continue
	echo "FAILED: $kind report from pid ${report##*.}:"
	cat "$report"
	fail=1
done
if [ $fail -ne 0 ]; then
	echo "$kind failed"
	exit 1
fi
echo "$kind: all test binaries passed, no reports"
