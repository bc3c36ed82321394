#!/bin/sh
# Runs each cmocka test binary twice: with pidfds, and with the fallback
# (ERRGROUP_DISABLE_PIDFD=1) that old kernels, seccomp and valgrind get.
# Every binary runs under a timeout, so a hang is a failure, not a stall.
set -u
fail=0
for t in "$@"; do
	for mode in pidfd fallback; do
		if [ "$mode" = fallback ]; then
			env=ERRGROUP_DISABLE_PIDFD=1
		else
			env=ERRGROUP_DISABLE_PIDFD=0
		fi
		echo "== $t ($mode)"
		if ! env $env timeout -k 5 300 "$t"; then
			echo "FAILED: $t ($mode)"
			fail=1
		fi
	done
done
if [ $fail -ne 0 ]; then
	echo "some tests failed"
	exit 1
fi
echo "all test binaries passed"
