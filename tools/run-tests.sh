#!/bin/sh
# Runs each cmocka test binary twice: with pidfds, and with the fallback
# (ERRGROUP_DISABLE_PIDFD=1) that old kernels, seccomp and valgrind get.
# The binaries that test what a child inherits run a third time with the
# group's memory shared with children as ordinary memory is
# (ERRGROUP_DISABLE_WIPEONFORK=1: kernels before 4.14, some sandboxes).
# Every binary runs under a timeout, so a hang is a failure, not a stall:
# 300 s, or ERRGROUP_TEST_TIMEOUT seconds (make stress sets a longer one).
set -u
limit=${ERRGROUP_TEST_TIMEOUT:-300}
fail=0
for t in "$@"; do
	modes="pidfd fallback"
	case $(basename "$t") in
	test_group | test_hostile | test_hygiene) modes="$modes no-wipe" ;;
	esac
	for mode in $modes; do
		case $mode in
		pidfd) env="ERRGROUP_DISABLE_PIDFD=0" ;;
		fallback) env="ERRGROUP_DISABLE_PIDFD=1" ;;
		no-wipe) env="ERRGROUP_DISABLE_PIDFD=0 ERRGROUP_DISABLE_WIPEONFORK=1" ;;
		esac
		echo "== $t ($mode)"
		env $env timeout -k 5 "$limit" "$t"
		status=$?
		if [ $status -eq 124 ]; then
			echo "FAILED: $t ($mode): still running after $limit s"
			fail=1
		elif [ $status -ne 0 ]; then
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
