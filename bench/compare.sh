#!/bin/sh
# compare.sh - two builds of the bench, side by side, in the order A B B A.
#
#   bench/compare.sh ROUNDS C N BENCH_A BENCH_B
#
# Each round runs the bare loop, A, B, B, A and the bare loop again, each
# a fresh process of N tasks at concurrency C (bench --run).  Session 16
# found that of two builds run one after the other in each round, the one
# run second scored 2-4 points higher whichever it was; the mirrored order
# cancels that.  Printed: each build's median ratio to the round's bare
# loop, and the median (and range) of B over A within a round, which is
# the number to judge a change by.
set -eu
if [ $# -ne 5 ]; then
	echo "usage: $0 ROUNDS C N BENCH_A BENCH_B" >&2
	exit 2
fi
rounds=$1 c=$2 n=$3 a=$4 b=$5
rate() {
	"$1" --run "$2" "$c" "$n" | cut -d' ' -f1
}
i=0
while [ "$i" -lt "$rounds" ]; do
	echo "$(rate "$a" bare) $(rate "$a" errgroup) $(rate "$b" errgroup)" \
	     "$(rate "$b" errgroup) $(rate "$a" errgroup) $(rate "$a" bare)"
	i=$((i + 1))
done | perl -ane '
	my ($bare, $ra, $rb) = (($F[0] + $F[5]) / 2, ($F[1] + $F[4]) / 2, ($F[2] + $F[3]) / 2);
	push @a, $ra / $bare; push @b, $rb / $bare; push @ba, $rb / $ra; push @bare, $bare;
	END {
		sub median { my @s = sort { $a <=> $b } @_; $s[$#s / 2] }
		my @s = sort { $a <=> $b } @ba;
		printf "A %.3f  B %.3f  (ratio to bare, medians; bare %.0f tasks/s)\n",
		       median(@a), median(@b), median(@bare);
		printf "B/A %.3f  [%.3f-%.3f]  %d rounds\n", median(@ba), $s[0], $s[-1], scalar @ba;
	}'
