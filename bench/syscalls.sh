#!/bin/sh
# syscalls.sh - system calls per task: the library against the bare fork loop.
#
# Two counts, each taken for N1 and N2 tasks and reported as the
# difference over N2 - N1, so that what a run pays once (start-up, the
# group's creation, the first fork's page faults) drops out:
#   perf     raw_syscalls:sys_enter and context switches, counted by the
#            kernel without slowing the program: for the whole run (parent,
#            its threads and every child) and for the calling thread alone
#            (perf stat --no-inherit);
#   strace   every call, by name, with the parent (the calling thread and
#            any thread it starts) apart from the children (strace -ff
#            writes one file per thread; a thread is told from a child by
#            the CLONE_THREAD flag of the clone that made it).  strace slows
#            every call, so poll rounds can differ from a real run; perf's
#            totals are the faithful ones.
#
# Usage: bench/syscalls.sh [BENCH]   (default build/bench/bench)
set -eu

BENCH=${1:-build/bench/bench}
PERF_N1=1000 PERF_N2=3000
STRACE_N1=100 STRACE_N2=300
VARIANTS="bare errgroup errgroup+cancel"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

have() { command -v "$1" >/dev/null 2>&1; }

# perf_count INHERIT VARIANT C N -> "syscalls context-switches"
perf_count() {
	inherit=$1 variant=$2 c=$3 n=$4
	out=$tmp/perf
	if [ "$inherit" = yes ]; then
		perf stat -x, -o "$out" -e raw_syscalls:sys_enter,context-switches -- \
			"$BENCH" --run "$variant" "$c" "$n" --warmup 0 >/dev/null
	else
		perf stat --no-inherit -x, -o "$out" -e raw_syscalls:sys_enter,context-switches -- \
			"$BENCH" --run "$variant" "$c" "$n" --warmup 0 >/dev/null
	fi
	awk -F, '$3 ~ /sys_enter/ { s = $1 } $3 ~ /context-switches/ { c = $1 }
		END { print s, c }' "$out"
}

# strace_count VARIANT C N -> lines "role syscall count", role parent|child
strace_count() {
	variant=$1 c=$2 n=$3 dir=$tmp/strace-$n
	rm -rf "$dir" && mkdir "$dir"
	strace -ff -o "$dir/t" -- "$BENCH" --run "$variant" "$c" "$n" --warmup 0 >/dev/null
	main=$(grep -l '^execve(' "$dir"/t.* | head -1)
	# The calling thread, and every thread it started (the supervisor).
	threads=$(grep 'CLONE_THREAD' "$main" | sed -n 's/.*= \([0-9][0-9]*\)$/\1/p')
	for f in "$dir"/t.*; do
		role=child
		[ "$f" = "$main" ] && role=parent
		for t in $threads; do
			[ "$f" = "$dir/t.$t" ] && role=parent
		done
		awk -v role="$role" '/^[a-z0-9_]+\(/ { sub(/\(.*/, ""); n[$0]++ }
			END { for (s in n) print role, s, n[s] }' "$f"
	done | awk '{ n[$1 " " $2] += $3 } END { for (k in n) print k, n[k] }'
}

per_task() {   # per_task A B N1 N2 -> (B - A) / (N2 - N1)
	awk -v a="$1" -v b="$2" -v n1="$3" -v n2="$4" 'BEGIN { printf "%.2f", (b - a) / (n2 - n1) }'
}

if have perf && perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1; then
	echo "== perf: per task, from runs of $PERF_N1 and $PERF_N2 tasks"
	printf '%-16s %2s  %14s %14s  %14s %14s\n' variant C "syscalls, all" "calling thread" \
		"csw, all" "calling thread"
	for variant in $VARIANTS; do
		for c in 1 2; do
			# Word splitting wanted: each call prints two numbers.
			# shellcheck disable=SC2046
			set -- $(perf_count yes "$variant" "$c" $PERF_N1) \
				$(perf_count yes "$variant" "$c" $PERF_N2) \
				$(perf_count no "$variant" "$c" $PERF_N1) \
				$(perf_count no "$variant" "$c" $PERF_N2)
			printf '%-16s %2s  %14s %14s  %14s %14s\n' "$variant" "$c" \
				"$(per_task "$1" "$3" $PERF_N1 $PERF_N2)" \
				"$(per_task "$5" "$7" $PERF_N1 $PERF_N2)" \
				"$(per_task "$2" "$4" $PERF_N1 $PERF_N2)" \
				"$(per_task "$6" "$8" $PERF_N1 $PERF_N2)"
		done
	done
	echo "(\"all\" counts the parent, its threads and every child.)"
	echo
else
	echo "== perf with raw_syscalls tracepoints is not available: skipped"
fi

if ! have strace; then
	echo "== strace is not installed: no breakdown by name"
	exit 0
fi
echo "== strace -ff: system calls per task by name, from runs of $STRACE_N1 and $STRACE_N2 tasks"
for variant in $VARIANTS; do
	for c in 1 2; do
		strace_count "$variant" "$c" $STRACE_N1 >"$tmp/a"
		strace_count "$variant" "$c" $STRACE_N2 >"$tmp/b"
		echo "-- $variant, C=$c"
		awk -v n1=$STRACE_N1 -v n2=$STRACE_N2 '
			FNR == NR { a[$1 " " $2] = $3; next }
			{ b[$1 " " $2] = $3 }
			END {
				for (k in a) if (!(k in b)) b[k] = 0
				for (k in b) {
					split(k, p, " ")
					printf "%s %s %.2f\n", p[1], p[2], (b[k] - a[k]) / (n2 - n1)
				}
			}' "$tmp/a" "$tmp/b" | sort -k1,1r -k3,3nr | awk '
			function flush() { if (role != "") printf "   %-6s %6.2f:%s\n", role, total, line }
			$1 != role { flush(); role = $1; total = 0; line = "" }
			{ total += $3; if ($3 >= 0.05 || $3 <= -0.05) line = line sprintf(" %s %.2f", $2, $3) }
			END { flush() }'
	done
done
