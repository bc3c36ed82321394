#!/bin/bash
# run.sh ERRGROUP - the errgroup command against real commands.
#
# Each test_* function pins down one behaviour of the binary given as the
# argument.  Jobs that must wait for a sibling wait for a file it creates
# (tests/cli/await); a job that must be stopped runs `sleep 1000`.  Every
# run of errgroup has a timeout, which only turns a hang into a failure.
set -u

if [ $# -ne 1 ]; then
	echo "usage: $0 ERRGROUP" >&2
	exit 2
fi
EG=$(realpath "$1")
AWAIT=$(realpath "$(dirname "$0")")/await
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failed=0       # in a test's subshell: its failures so far

# eg ARGS...: runs errgroup with stdout in $D/out, stderr in $D/err and
# its status in $rc.
eg() {
	timeout -k 5 30 "$EG" "$@" >"$D/out" 2>"$D/err"
	rc=$?
}

fail() {
	echo "FAIL: $test: $*"
	echo "  stderr of errgroup:"
	sed 's/^/    /' "$D/err" 2>/dev/null | head -20
	failed=$((failed + 1))
	return 1
}

expect_rc() {
	[ "$rc" -eq "$1" ] || fail "exit status $rc, expected $1"
}

# expect_err TEXT: errgroup's stderr holds TEXT.
expect_err() {
	grep -qF -- "$1" "$D/err" || fail "stderr lacks '$1'"
}

expect_out() {
	local want
	want=$(printf '%s\n' "$@")
	[ "$(cat "$D/out")" = "$want" ] ||
		fail "stdout is '$(head -c 300 "$D/out")', expected '$want'"
}

expect_sorted_out() {
	local want
	want=$(printf '%s\n' "$@" | sort)
	[ "$(sort "$D/out")" = "$want" ] ||
		fail "stdout is '$(head -c 300 "$D/out")', expected '$want' in any order"
}

# gone PID...: each process has ended (a zombie waiting for init counts as
# ended).  Signals take a moment to land, so this waits up to 10 s.
gone() {
	local pid n state
	for pid in "$@"; do
		n=0
		while [ -e "/proc/$pid" ]; do
			state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)
			[ "$state" = Z ] && break
			n=$((n + 1))
			if [ $n -gt 1000 ]; then
				fail "process $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline")) is still running"
				kill -9 "$pid" 2>/dev/null
				return 1
			fi
			sleep 0.01
		done
	done
}

# shows PATTERN FILE: waits until FILE holds a line matching PATTERN (up
# to 20 s); false if it never does.
shows() {
	local n=0
	until grep -q "$1" "$2" 2>/dev/null; do
		n=$((n + 1))
		[ $n -gt 2000 ] && return 1
		sleep 0.01
	done
}

# Pids recorded by jobs in $D/pid.*.
recorded_pids() {
	cat "$D"/pid.* 2>/dev/null
}

test_help_and_version() {
	eg --help
	expect_rc 0
	grep -q '^Exit status' "$D/out" || fail "--help does not document the exit status"
	grep -q '124' "$D/out" || fail "--help does not mention 124"
	eg --version
	expect_rc 0
	grep -qE '^errgroup [0-9]+\.[0-9]+\.[0-9]+$' "$D/out" || fail "--version says '$(cat "$D/out")'"
}

test_bad_options_are_125_with_a_message() {
	local args
	while IFS='|' read -r text args; do
		# shellcheck disable=SC2086
		eg $args
		expect_rc 125 || continue
		expect_err "$text"
	done <<'EOF'
unknown option '--bogus'|--bogus true
unknown option '-x'|-xk true
unknown option '-x'|-j2 -kx true
option '-j' needs a value|-kj
'x' is not a whole number|-j x true
'-1' is not a number of seconds|--timeout -1 true
'abc' is not a number of seconds|--timeout abc true
'1s' is not a number of seconds|--grace 1s true
'-2' is not a whole number|--retries -2 true
needs a value|--joblog
no COMMAND before :::|::: a b
only one ::: is allowed|echo ::: a ::: b
--tag needs the output captured|--tag -u echo ::: a
--bar needs the output captured|--bar -u echo ::: a
'0x10' is not a number of seconds|--timeout 0x10 true
--jobs: 'x' is not a whole number|--jobs x true
option '--jo' is ambiguous (--jobs, --joblog)|--jo 2 true
option '--json' takes no value|--json=yes true
EOF
}

# A time too small for a double is still a time, not "no limit".
test_underflowing_timeout_is_the_shortest_one() {
	eg --timeout 1e-400 sleep ::: 10
	expect_rc 124
	expect_err "timed out after 0.001s"
}

# The rest of a line after a NUL would be dropped without a word.
test_nul_in_input_is_125() {
	printf 'echo a\0b\necho c\n' >"$D/jobs"
	eg -a "$D/jobs"
	expect_rc 125
	expect_err "$D/jobs, line 1: holds a NUL byte"
	[ ! -s "$D/out" ] || fail "a job ran: '$(cat "$D/out")'"
}

# Closed, stdout was taken by errgroup's own signalfd, and writing the
# output waited for ever for it to turn writable.
test_closed_stdout_is_an_error_not_a_hang() {
	timeout -k 5 30 "$EG" echo ::: a >&- 2>"$D/err"
	rc=$?
	expect_rc 125
	expect_err "cannot write the jobs' output: Bad file descriptor"
}

test_output_that_cannot_be_written_is_125() {
	timeout -k 5 30 "$EG" --json true ::: a >/dev/full 2>"$D/err"
	rc=$?
	expect_rc 125
	expect_err "cannot write the JSON report: No space left on device"
	timeout -k 5 30 "$EG" --help >/dev/full 2>"$D/err"
	rc=$?
	expect_rc 125
	expect_err "cannot write to standard output: No space left on device"
}

test_unreadable_input_is_125() {
	eg -a "$D/missing"
	expect_rc 125
	expect_err "cannot open $D/missing"
	eg -a "$D"
	expect_rc 125
	expect_err "cannot read $D"
	eg --joblog "$D/no/such/dir/log" true ::: a
	expect_rc 125
	expect_err "cannot write the job log"
}

test_all_succeed() {
	eg echo ::: a b c
	expect_rc 0
	expect_sorted_out a b c
	[ ! -s "$D/err" ] || fail "stderr is not empty"
}

# A SIGCHLD ignored by whoever started errgroup survives exec.  Unreset,
# the kernel reaps the jobs itself, and where it keeps no status for
# pidfds (before 6.15; here the fallback without pidfds) every job's
# status is lost and counted a failure.
test_sigchld_ignored_by_the_caller_loses_no_status() {
	ERRGROUP_DISABLE_PIDFD=1 timeout -k 5 30 perl -e '$SIG{CHLD} = "IGNORE"; exec @ARGV' \
		"$EG" -j2 echo ::: a b c >"$D/out" 2>"$D/err"
	rc=$?
	expect_rc 0
	expect_sorted_out a b c
}

test_no_jobs_is_success() {
	eg true < /dev/null
	expect_rc 0
	eg < /dev/null
	expect_rc 0
}

test_arguments_are_never_split() {
	eg printf '<%s>\n' ::: 'a; touch x' 'b  c' '$(touch y)'
	expect_rc 0
	expect_sorted_out '<a; touch x>' '<b  c>' '<$(touch y)>'
	[ ! -e x ] && [ ! -e y ] || fail "an argument reached a shell"
}

test_braces_are_replaced_in_every_word() {
	eg printf '%s|%s\n' 'pre{}post' '{}{}' ::: A
	expect_rc 0
	expect_out 'preApost|AA'
}

test_options_end_at_the_command() {
	eg -j2 sh -c 'echo "[{}]"' ::: A B
	expect_rc 0
	expect_sorted_out '[A]' '[B]'
}

test_lines_run_in_a_shell_and_comments_are_skipped() {
	printf 'echo one | tr a-z A-Z\n\n# echo comment\necho two\n' >"$D/jobs"
	eg < "$D/jobs"
	expect_rc 0
	expect_sorted_out ONE two
	eg -a "$D/jobs"
	expect_rc 0
	expect_sorted_out ONE two
}

test_lines_are_arguments_of_a_command() {
	printf 'a b\n\nc\n' >"$D/in"
	eg printf '<%s>\n' <"$D/in"
	expect_rc 0
	expect_sorted_out '<a b>' '<c>'
}

test_first_failure_sets_the_status() {
	eg sh -c 'exit 3' ::: x
	expect_rc 3
	expect_err "job 1 (sh -c 'exit 3' x) exited with status 3"
	expect_err "1 of 1 job failed"
}

# As a shell does: the report, not the status, tells it from errgroup's
# own 125 or from a job killed by SIGINT.
test_job_status_of_125_or_more_passes_through() {
	eg sh -c 'exit 125' ::: x
	expect_rc 125
	expect_err "exited with status 125"
	eg sh -c 'exit 130' ::: x
	expect_rc 130
	expect_err "exited with status 130"
	eg sh -c 'exit 200' ::: x
	expect_rc 200
	expect_err "exited with status 200"
}

test_signal_is_128_plus_n() {
	eg sh -c 'kill -SEGV $$' ::: x
	expect_rc 139
	expect_err "was killed by SIGSEGV"
}

test_not_found_is_127_not_executable_is_126() {
	eg "$D/no-such-program" ::: x
	expect_rc 127
	expect_err "cannot execute '$D/no-such-program'"
	printf 'echo hi\n' >"$D/script"
	chmod 644 "$D/script"
	eg "$D/script" ::: x
	expect_rc 126
	expect_err "Permission denied"
}

# The failing job waits until its siblings run: a background grandchild, and
# a pipeline whose two sides record their pids.  The fourth job must never
# start.
test_fail_fast_stops_siblings_pipelines_and_grandchildren() {
	cat >"$D/jobs" <<EOF
sleep 1000 & echo \$! > $D/pid.grandchild; wait
sh -c 'echo \$\$ > $D/pid.left; exec sleep 1000' | sh -c 'echo \$\$ > $D/pid.right; exec sleep 1000'
$AWAIT $D/pid.grandchild $D/pid.left $D/pid.right && exit 3
touch $D/never
EOF
	eg -j3 -a "$D/jobs"
	expect_rc 3
	expect_err "job 3"
	expect_err "1 of 4 jobs failed, 2 stopped, 1 never started"
	[ ! -e "$D/never" ] || fail "a job started after the failure"
	# shellcheck disable=SC2046
	gone $(recorded_pids)
}

test_keep_going_runs_everything_and_reports_each_failure() {
	printf 'exit 4\ntouch %s/ran\nexit 5\n' "$D" >"$D/jobs"
	eg -k -j1 -a "$D/jobs"
	expect_rc 4
	[ -e "$D/ran" ] || fail "a job after the failure did not run"
	expect_err "job 1 (exit 4) exited with status 4"
	expect_err "job 3 (exit 5) exited with status 5"
	expect_err "2 of 3 jobs failed"
}

test_timeout_is_124() {
	eg --timeout 0.2 sleep ::: 1000
	expect_rc 124
	expect_err "job 1 (sleep 1000) timed out after 0.2s"
	eg --timeout 30 true ::: a
	expect_rc 0
}

test_grace_ends_in_sigkill() {
	# The job and its sleep ignore SIGTERM: only the SIGKILL after the
	# grace ends them.
	eg --timeout 0.1 --grace 0.2 sh -c "trap '' TERM; echo \$\$ > $D/pid.job; sleep 1000" ::: x
	expect_rc 124
	# shellcheck disable=SC2046
	gone $(recorded_pids)
}

test_retried_job_succeeds_without_stopping_the_others() {
	# The first attempt fails; the second creates what job 2 waits for.
	cat >"$D/jobs" <<EOF
echo x >> $D/attempts; [ \$(wc -l < $D/attempts) -ge 2 ] && touch $D/second
$AWAIT $D/second
EOF
	eg -j2 --retries 1 -a "$D/jobs"
	expect_rc 0
	[ "$(wc -l < "$D/attempts")" -eq 2 ] || fail "$(wc -l < "$D/attempts") attempts, expected 2"
}

test_retries_are_spent_then_the_job_fails() {
	eg --retries 2 sh -c "echo x >> $D/attempts; exit 6" ::: x
	expect_rc 6
	[ "$(wc -l < "$D/attempts")" -eq 3 ] || fail "$(wc -l < "$D/attempts") attempts, expected 3"
	expect_err "exited with status 6, at attempt 3"
}

# Each job writes half, lets the other write half, then writes the rest:
# straight through, their lines would interleave.
interleaving_jobs() {
	cat >"$D/jobs" <<EOF
for i in \$(seq 100); do echo A\$i; done; touch $D/a; $AWAIT $D/b; for i in \$(seq 100); do echo A\$i; done
for i in \$(seq 100); do echo B\$i; done; touch $D/b; $AWAIT $D/a; for i in \$(seq 100); do echo B\$i; done
EOF
}

# How many times the output switches between A and B lines.
switches() {
	cut -c1 "$D/out" | uniq | wc -l
}

test_grouped_output_never_interleaves() {
	interleaving_jobs
	eg -j2 -a "$D/jobs"
	expect_rc 0
	[ "$(wc -l < "$D/out")" -eq 400 ] || fail "$(wc -l < "$D/out") lines, expected 400"
	[ "$(switches)" -eq 2 ] || fail "the jobs' lines interleave"
	# The same jobs, not grouped, do interleave: the test can see it.
	rm -f "$D/a" "$D/b"
	eg -j2 -u -a "$D/jobs"
	expect_rc 0
	[ "$(switches)" -gt 2 ] || fail "--ungroup did not interleave: this test proves nothing"
}

test_ten_megabytes_survive() {
	head -c 10485760 /dev/urandom >"$D/big"
	eg cat ::: "$D/big"
	expect_rc 0
	cmp -s "$D/out" "$D/big" || fail "--group: the output differs from the 10 MB written"
	eg --line-buffer cat ::: "$D/big"
	expect_rc 0
	cmp -s "$D/out" "$D/big" || fail "--line-buffer: the output differs from the 10 MB written"
}

test_killed_job_loses_no_output() {
	head -c 1000000 /dev/urandom >"$D/big"
	cat >"$D/jobs" <<EOF
cat $D/big; echo end >&2; touch $D/printed; sleep 1000
$AWAIT $D/printed && exit 1
EOF
	eg -j2 -a "$D/jobs"
	expect_rc 1
	cmp -s "$D/out" "$D/big" || fail "the killed job's stdout is not all there"
	expect_err "end"
}

test_line_buffer_passes_whole_lines_as_they_come() {
	local pid
	timeout -k 5 30 "$EG" --line-buffer sh -c \
		"printf 'hello\n'; printf 'part'; $AWAIT $D/go; printf 'ial\n'" ::: x \
		>"$D/out" 2>"$D/err" &
	pid=$!
	shows hello "$D/out" || fail "the first line never came"
	grep -q part "$D/out" && fail "half a line was written"
	touch "$D/go"
	wait $pid
	rc=$?
	expect_rc 0
	expect_out hello partial
}

test_tag_and_name() {
	eg --tag echo ::: x y
	expect_rc 0
	expect_sorted_out "$(printf 'x\tx')" "$(printf 'y\ty')"
	eg --tag -n first -n second echo ::: x y
	expect_sorted_out "$(printf 'first\tx')" "$(printf 'second\ty')"
	printf 'echo a; echo b\n' >"$D/in"
	eg --tag --line-buffer <"$D/in"
	expect_out "$(printf 'echo a; echo b\ta')" "$(printf 'echo a; echo b\tb')"
}

test_ungroup_passes_output_straight_through() {
	eg -u sh -c 'echo out; echo err >&2' ::: x
	expect_rc 0
	expect_out out
	expect_err err
}

test_jobs_read_dev_null_unless_asked() {
	echo secret >"$D/in"
	eg cat ::: - <"$D/in"
	expect_rc 0
	expect_out ''
	eg --stdin cat ::: - <"$D/in"
	expect_out secret
}

# Under systemd's NotifyAccess=all a job's READY=1 would be errgroup's.
test_jobs_do_not_inherit_notify_socket() {
	export NOTIFY_SOCKET=/run/errgroup-test/notify OTHER_VARIABLE=kept
	eg sh -c 'echo "${NOTIFY_SOCKET-unset} $OTHER_VARIABLE"' ::: x
	expect_rc 0
	expect_out 'unset kept'
}

test_limit_is_never_exceeded() {
	eg -j2 sh -c "echo + >> $D/log; $AWAIT $D/log; echo - >> $D/log" ::: 1 2 3 4 5 6
	expect_rc 0
	local most
	most=$(awk '/\+/ { n++; if (n > max) max = n } /-/ { n-- } END { print max }' "$D/log")
	[ "$most" -le 2 ] || fail "$most jobs ran at once with -j2"
}

# No job holds another job's pipes: each prints its own stdout and stderr
# pipes and every other fd it holds, while all three run.
test_jobs_do_not_hold_each_others_pipes() {
	local job="touch $D/started.{}; $AWAIT $D/started.1 $D/started.2 $D/started.3;"
	job="$job echo out \$(readlink /proc/\$\$/fd/1); echo out \$(readlink /proc/\$\$/fd/2);"
	job="$job for f in /proc/\$\$/fd/*; do echo has \$(readlink \$f); done"
	eg -j3 sh -c "$job" ::: 1 2 3
	expect_rc 0
	awk '$1 == "out" { own[$2] = NR } $1 == "has" { held[$2]++ }
	     END { for (p in own) if (held[p] > 1) bad++; exit bad > 0 }' "$D/out" ||
		fail "a job holds a sibling's pipe"
}

test_joblog_has_parallels_columns() {
	eg -k -j1 --joblog "$D/log" sh -c 'echo hi; exit {}' ::: 0 3
	expect_rc 3
	[ "$(head -1 "$D/log")" = "$(printf 'Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand')" ] ||
		fail "header is '$(head -1 "$D/log")'"
	awk -F'\t' 'NR > 1 && NF != 9 { exit 1 }' "$D/log" || fail "a line without 9 columns"
	[ "$(awk -F'\t' 'NR > 1 { print $1, $2, $5, $6, $7, $8, $9 }' "$D/log")" = \
	  "$(printf "1 : 0 3 0 0 sh -c 'echo hi; exit 0'\n2 : 0 3 3 0 sh -c 'echo hi; exit 3'")" ] ||
		fail "lines are '$(tail -n +2 "$D/log")'"
	eg --joblog "$D/log" sh -c 'kill -KILL $$' ::: x
	expect_rc 137
	[ "$(awk -F'\t' 'NR == 2 { print $7, $8 }' "$D/log")" = "-1 9" ] ||
		fail "a killed job's Exitval and Signal are '$(awk -F'\t' 'NR == 2 { print $7, $8 }' "$D/log")'"
}

test_json_has_one_object_per_job() {
	eg -k -j1 --json sh -c 'exit {}' ::: 0 2
	expect_rc 2
	[ "$(wc -l < "$D/out")" -eq 2 ] || fail "$(wc -l < "$D/out") lines of JSON"
	grep -q '"seq":2,.*"state":"failed".*"exit":2' "$D/out" || fail "no failed job 2 in '$(cat "$D/out")'"
	if command -v python3 >/dev/null; then
		python3 -c 'import json, sys
for line in sys.stdin: json.loads(line)' <"$D/out" || fail "invalid JSON"
	fi
}

test_one_for_all_stops_the_rest_when_one_ends() {
	cat >"$D/jobs" <<EOF
sleep 1000 & echo \$! > $D/pid.service; wait
$AWAIT $D/pid.service
EOF
	eg --one-for-all -j2 -a "$D/jobs"
	expect_rc 0
	expect_err "job 2 ($AWAIT $D/pid.service) exited with status 0"
	expect_err "0 of 2 jobs failed, 1 stopped"
	# shellcheck disable=SC2046
	gone $(recorded_pids)
	rm -f "$D"/pid.*
	sed -i 's/$/ \&\& exit 5/;1s/ && exit 5$//' "$D/jobs"
	eg --one-for-all -j2 -a "$D/jobs"
	expect_rc 5
	# shellcheck disable=SC2046
	gone $(recorded_pids)
}

# watch PID: kills PID should it still run 30 s from now, which only turns
# a hang into a failure.  The watchdog ends by itself with PID (tail
# --pid), so it leaves no sleep behind; collect it with `wait "$watchdog"`
# once PID was waited for.
watch() {
	{ timeout 30 tail -s 0.1 --pid="$1" -f /dev/null || kill -9 "$1"; } 2>/dev/null &
	watchdog=$!
}

# drain FIFO: reads FIFO to its end in the background, as $drainer.  A
# drainer whose writer had already gone waits to open FIFO for ever:
# undrain ends it once errgroup was waited for (what errgroup wrote was
# read by then).
drain() {
	cat "$1" >/dev/null &
	drainer=$!
}

undrain() {
	kill "$drainer" 2>/dev/null
	wait "$drainer" 2>/dev/null
}

# Starts errgroup in the background on jobs that record their pids and
# their grandchildren's, waits until all run, sends it signal $1.
signal_errgroup() {
	cat >"$D/jobs" <<EOF
sleep 1000 & echo \$! > $D/pid.1g; echo \$\$ > $D/pid.1; wait
sleep 1000 & echo \$! > $D/pid.2g; echo \$\$ > $D/pid.2; wait
EOF
	# A background job of a script ignores SIGINT unless told otherwise.
	env --default-signal=INT "$EG" -j2 -a "$D/jobs" >"$D/out" 2>"$D/err" &
	local pid=$! watchdog
	watch "$pid"
	"$AWAIT" "$D/pid.1g" "$D/pid.1" "$D/pid.2g" "$D/pid.2" || fail "the jobs did not start"
	kill "-$1" "$pid"
	# (bash would say "Killed" for the SIGKILL test)
	{ wait "$pid"; } 2>/dev/null
	rc=$?
	wait "$watchdog"
}

test_signals_stop_every_job() {
	local sig status
	for sig in TERM:143 INT:130 HUP:129; do
		rm -f "$D"/pid.*
		status=${sig#*:}
		signal_errgroup "${sig%:*}"
		expect_rc "$status"
		expect_err "stopped by SIG${sig%:*}"
		# shellcheck disable=SC2046
		gone $(recorded_pids)
	done
}

# asleep PID: the process sleeps (state S).
asleep() {
	[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = S ]
}

# sleeping_in_write PID: the process sleeps in write(2).
sleeping_in_write() {
	asleep "$1" && [ "$(cut -d' ' -f1 "/proc/$1/syscall" 2>/dev/null)" = 1 ]
}

# steadily TRIES COMMAND...: COMMAND holds five times running, 10 ms
# apart, within TRIES tries; a state seen once may be one passing by.
steadily() {
	local tries=$1 n=0 still=0
	shift
	while [ $still -lt 5 ] && [ $n -lt "$tries" ]; do
		if "$@"; then
			still=$((still + 1))
		else
			still=0
		fi
		n=$((n + 1))
		sleep 0.01
	done
	[ $still -eq 5 ]
}

# pause_reader FIFO: makes the fifo, and a reader of it that reads
# nothing, as $reader; end_reader ends that reader.
pause_reader() {
	mkfifo "$1"
	sleep 1000 <"$1" &
	reader=$!
}

end_reader() {
	kill "$reader" 2>/dev/null
	wait "$reader" 2>/dev/null
}

# The job $job sleeps in write, its pipe full, and errgroup ($pid) sleeps.
job_and_errgroup_asleep() {
	sleeping_in_write "$job" && asleep "$pid"
}

# A reader that stops reading (a paused pager) leaves errgroup waiting to
# write: a signal must still stop the jobs at once, and the output wait
# for the reader.  The job (yes) fills its pipe, so it sleeps in write;
# errgroup asleep as well, several times running, is no longer reading it.
# Were that seen too early, the test would pass without the fix; it
# never fails with it.
test_signal_stops_jobs_while_output_waits_for_its_reader() {
	local pid watchdog reader drainer job
	pause_reader "$D/fifo"
	"$EG" --line-buffer sh -c 'echo $$ > pid.1; exec yes' ::: a >"$D/fifo" 2>"$D/err" &
	pid=$!
	watch "$pid"
	"$AWAIT" "$D/pid.1" || fail "the job did not start"
	job=$(cat "$D/pid.1")
	steadily 1000 job_and_errgroup_asleep
	kill -TERM "$pid"
	gone "$job"
	# Now the output flows, and errgroup ends as stopped by SIGTERM.
	drain "$D/fifo"
	{ wait "$pid"; } 2>/dev/null
	rc=$?
	wait "$watchdog"
	undrain
	end_reader
	expect_rc 143
	expect_err "stopped by SIGTERM"
	expect_err "0 of 1 job failed, 1 stopped"
}

# with_paused_reader STEP ARGS...: runs errgroup with ARGS, its output to a
# reader that reads nothing until the function STEP has returned; $rc as
# with eg.
with_paused_reader() {
	local step=$1 pid watchdog reader drainer
	shift
	pause_reader "$D/fifo"
	"$EG" "$@" >"$D/fifo" 2>"$D/err" &
	pid=$!
	watch "$pid"
	"$step"
	drain "$D/fifo"
	wait "$pid"
	rc=$?
	wait "$watchdog"
	undrain
	end_reader
}

# The job that records its pid in $D/pid.s is stopped, while the reader
# still reads nothing.
job_s_is_stopped() {
	"$AWAIT" "$D/pid.s" || fail "the job to stop did not start"
	gone "$(cat "$D/pid.s")"
}

# The same with a failure: job 2 fails once errgroup has reaped job 1 and
# waits to write its output, which fills the pipe.  Job 3 must be stopped
# then, not when the reader reads again.
test_failure_stops_jobs_while_output_waits_for_its_reader() {
	cat >"$D/jobs" <<EOF
echo \$\$ > $D/pid.1; head -c 200000 /dev/zero
$AWAIT $D/pid.1; while kill -0 \$(cat $D/pid.1) 2>/dev/null; do sleep 0.01; done; exit 3
echo \$\$ > $D/pid.s; exec sleep 1000
EOF
	with_paused_reader job_s_is_stopped -j0 -a "$D/jobs"
	expect_rc 3
	expect_err "1 of 3 jobs failed, 1 stopped"
}

# And the failed job's own output is what waits.
test_failed_job_whose_output_waits_stops_the_others() {
	cat >"$D/jobs" <<EOF
echo \$\$ > $D/pid.s; exec sleep 1000
$AWAIT $D/pid.s; head -c 200000 /dev/zero; exit 3
EOF
	with_paused_reader job_s_is_stopped -j0 -a "$D/jobs"
	expect_rc 3
	expect_err "1 of 2 jobs failed, 1 stopped"
}

# A reader that went away (`| head`) is errgroup's own failure: the jobs
# are stopped as for any failure, SIGTERM first, and recorded, and the
# status says so; a SIGPIPE would have killed errgroup on the spot, and
# the jobs with it.  Job a writes once job b runs and the reader is gone.
test_reader_that_went_away_stops_the_jobs() {
	local reader
	mkfifo "$D/fifo" "$D/closed"
	{ exec <"$D/fifo"; "$AWAIT" "$D/pid.b"; exec 0<&-; echo >"$D/closed"; } &
	reader=$!
	cat >"$D/jobs" <<EOF
read _ < $D/closed; echo a
trap 'touch $D/termed; exit 0' TERM; sleep 1000 & echo \$\$ > $D/pid.b; wait
EOF
	timeout -k 5 30 "$EG" -j2 --joblog "$D/log" -a "$D/jobs" >"$D/fifo" 2>"$D/err"
	rc=$?
	wait "$reader"
	expect_rc 125
	expect_err "cannot write the jobs' output: Broken pipe"
	[ -e "$D/termed" ] || fail "job b got no SIGTERM"
	[ "$(wc -l <"$D/log")" -eq 3 ] || fail "the job log holds '$(cat "$D/log")'"
}

# A job's runtime ends when it does, not when its output could be written:
# job 2 ends while errgroup waits for a reader that reads nothing for 3 s.
# (The one timed check here: job 2 runs for some milliseconds.)
job_2_ended_3_s_ago() {
	"$AWAIT" "$D/pid.2" || fail "job 2 did not end"
	sleep 3
}

test_runtime_leaves_out_the_wait_for_the_reader() {
	local runtime
	cat >"$D/jobs" <<EOF
echo \$\$ > $D/pid.1; head -c 200000 /dev/zero
$AWAIT $D/pid.1; while kill -0 \$(cat $D/pid.1) 2>/dev/null; do sleep 0.01; done; echo \$\$ > $D/pid.2
EOF
	with_paused_reader job_2_ended_3_s_ago -j2 --joblog "$D/log" -a "$D/jobs"
	expect_rc 0
	runtime=$(awk -F'\t' '$1 == 2 { print $4 }' "$D/log")
	awk -v t="$runtime" 'BEGIN { exit !(t != "" && t < 3) }' ||
		fail "job 2 ran for '$runtime' s, the reader's pause included"
}

# Only a job that ended because of the cancel counts as stopped: job 1
# ends well on its SIGTERM.
test_job_that_ends_well_after_the_cancel_is_not_counted_stopped() {
	cat >"$D/jobs" <<EOF
trap 'exit 0' TERM; sleep 1000 & echo \$\$ > $D/pid.1; wait
$AWAIT $D/pid.1 && exit 3
EOF
	eg -j2 -a "$D/jobs"
	expect_rc 3
	expect_err "1 of 2 jobs failed"
	! grep -qE ', [0-9]+ stopped' "$D/err" || fail "a job counted stopped: '$(cat "$D/err")'"
}

test_sigkill_leaves_no_job_behind() {
	signal_errgroup KILL
	expect_rc 137
	# shellcheck disable=SC2046
	gone $(recorded_pids)
}

# becomes_stopped PID yes|no: the process is, or is no longer, stopped
# (state T).  Signals take a moment to land, so this waits up to 10 s.
becomes_stopped() {
	local n=0 state
	while :; do
		state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)
		if [ "$2" = yes ]; then [ "$state" = T ] && return 0; else [ "$state" != T ] && return 0; fi
		n=$((n + 1))
		[ $n -gt 1000 ] && return 1
		sleep 0.01
	done
}

# Two jobs that record their pids and their grandchildren's, and say in
# $D/cont.N when they are continued (SIGCONT).
suspendable_jobs() {
	cat >"$D/jobs" <<EOF
trap 'echo > $D/cont.1' CONT; sleep 1000 & echo \$! > $D/pid.1g; echo \$\$ > $D/pid.1; wait; wait
trap 'echo > $D/cont.2' CONT; sleep 1000 & echo \$! > $D/pid.2g; echo \$\$ > $D/pid.2; wait; wait
EOF
}

# suspend_and_resume SIG: errgroup, in a process group of its own as a
# shell's job is, gets the stop signal SIG; it must stop every job with
# what it started, then itself, and continued (fg, bg), continue them.
suspend_and_resume() {
	local pid watchdog p
	suspendable_jobs
	# In a process group of its own: one that a stop signal may stop.
	set -m
	"$EG" -j2 -a "$D/jobs" >"$D/out" 2>"$D/err" &
	pid=$!
	set +m
	watch "$pid"
	"$AWAIT" "$D/pid.1g" "$D/pid.1" "$D/pid.2g" "$D/pid.2" || fail "the jobs did not start"
	kill "-$1" "$pid"
	becomes_stopped "$pid" yes || fail "errgroup did not stop on SIG$1"
	for p in $(recorded_pids); do
		becomes_stopped "$p" yes || { fail "job process $p was not stopped on SIG$1"; break; }
	done
	[ ! -e "$D/cont.1" ] && [ ! -e "$D/cont.2" ] || fail "a job was continued before errgroup"
	kill -CONT "$pid"
	"$AWAIT" "$D/cont.1" "$D/cont.2" || fail "the jobs were not continued"
	for p in $(recorded_pids); do
		becomes_stopped "$p" no || fail "job process $p is still stopped"
	done
	kill -TERM "$pid"
	{ wait "$pid"; } 2>/dev/null
	rc=$?
	wait "$watchdog"
	expect_rc 143
	# shellcheck disable=SC2046
	gone $(recorded_pids)
}

# Ctrl-Z: the terminal's SIGTSTP reaches errgroup's process group, not
# the jobs' own ones.
test_ctrl_z_suspends_every_job_and_fg_resumes_them() {
	suspend_and_resume TSTP
}

# So do the terminal's stops for a background process group that reads
# it (SIGTTIN) or writes to it under `stty tostop` (SIGTTOU): another
# process in errgroup's pipeline may cause them (a pager, `tee
# /dev/tty`).  errgroup stopped alone, and its jobs ran on.
test_terminal_stops_suspend_every_job_as_ctrl_z_does() {
	local sig
	for sig in TTIN TTOU; do
		rm -f "$D"/pid.* "$D"/cont.*
		suspend_and_resume "$sig"
		[ "$failed" -eq 0 ] || return
	done
}

# stopped_for_the_terminal STDOUT ARGS...: a shell on a new pty runs
# errgroup ARGS in its background (`&`), stdout to STDOUT, stderr to the
# pty.  Once the jobs run, `stty tostop` is turned on and job 1 writes a
# line: errgroup's next write to the terminal (that line, or --bar) stops
# it, and it must stop the jobs with it.  `fg` must continue them all;
# then errgroup gets SIGTERM.  The pty's output in $D/tty, errgroup's
# status (fg's) in $rc.  Once they have said who they are, the jobs wait
# in a fifo's open or in sleep, not in a loop: a shell (dash) stopped
# while it vforks waits for its stopped child in state D, not T.
stopped_for_the_terminal() {
	local stdout=$1 session pid p
	shift
	mkfifo "$D/print"
	cat >"$D/jobs" <<EOF
echo \$\$ > $D/pid.1; read _ < $D/print; echo written; exec sleep 1000
echo \$\$ > $D/pid.2; exec sleep 1000
EOF
	cat >"$D/session" <<EOF
set -m
$(printf '%q ' "$EG" "$@") -j2 -a $D/jobs >$stdout &
echo \$! > $D/errgroup
$AWAIT $D/tostop && stty tostop && : > $D/tostop-set
$AWAIT $D/fg
fg
EOF
	timeout -k 5 30 script -qec "bash $D/session" /dev/null >"$D/tty" 2>&1 </dev/null &
	session=$!
	"$AWAIT" "$D/errgroup" "$D/pid.1" "$D/pid.2" || fail "the jobs did not start"
	pid=$(cat "$D/errgroup")
	touch "$D/tostop"
	"$AWAIT" "$D/tostop-set" || fail "stty tostop did not work"
	# shellcheck disable=SC2016
	timeout 20 sh -c 'echo > "$1"' sh "$D/print" || fail "job 1 did not wait to print"
	becomes_stopped "$pid" yes || fail "errgroup did not stop"
	for p in $(recorded_pids); do
		becomes_stopped "$p" yes || { fail "job $p runs on while errgroup is stopped"; break; }
	done
	touch "$D/fg"
	for p in $(recorded_pids); do
		becomes_stopped "$p" no || fail "job $p is still stopped"
	done
	kill -TERM "$pid"
	wait "$session"
	rc=$?
}

# errgroup in the background of a terminal under `stty tostop`: its write
# of a job's output stopped errgroup alone (SIGTTOU), and its jobs, with
# no terminal, ran on unsupervised.  The write is made after fg, once.
test_tostop_write_of_output_stops_the_jobs_too() {
	command -v script >/dev/null || return 0   # util-linux, for a pty
	stopped_for_the_terminal /dev/tty --line-buffer
	expect_rc 143
	[ "$(tr -d '\r' <"$D/tty" | grep -cx written)" -eq 1 ] ||
		fail "the terminal shows '$(head -c 300 "$D/tty")', not one line 'written'"
}

# The same for the --bar line, the jobs' output going to a file.
test_tostop_write_of_the_bar_stops_the_jobs_too() {
	command -v script >/dev/null || return 0   # util-linux, for a pty
	stopped_for_the_terminal "$D/out" --bar
	expect_rc 143
	grep -q '0/2 done, 0 failed, 2 running' "$D/tty" || fail "no progress line"
	expect_out written
}

# Where no shell controls errgroup's process group (an orphaned one, as
# under setsid), the kernel drops a stop signal: errgroup runs on, and so
# must its jobs, continued as soon as they were stopped.
test_ctrl_z_in_an_orphaned_process_group_leaves_no_job_stopped() {
	local pid watchdog p
	suspendable_jobs
	setsid "$EG" -j2 -a "$D/jobs" >"$D/out" 2>"$D/err" &
	pid=$!
	watch "$pid"
	"$AWAIT" "$D/pid.1g" "$D/pid.1" "$D/pid.2g" "$D/pid.2" || fail "the jobs did not start"
	kill -TSTP "$pid"
	"$AWAIT" "$D/cont.1" "$D/cont.2" || fail "the jobs were not continued"
	for p in "$pid" $(recorded_pids); do
		becomes_stopped "$p" no || fail "process $p is still stopped"
	done
	kill -TERM "$pid"
	wait "$pid"
	rc=$?
	wait "$watchdog"
	expect_rc 143
	# shellcheck disable=SC2046
	gone $(recorded_pids)
}

# A second signal while the jobs have their grace kills them at once:
# the job here outlives its SIGTERM, and the grace is a minute.
test_second_signal_kills_the_jobs_at_once() {
	local pid watchdog
	cat >"$D/jobs" <<EOF
trap 'echo > $D/term' TERM; echo \$\$ > $D/pid.1; while :; do sleep 1; done
EOF
	env --default-signal=INT "$EG" --grace 60 -a "$D/jobs" >"$D/out" 2>"$D/err" &
	pid=$!
	watch "$pid"
	"$AWAIT" "$D/pid.1" || fail "the job did not start"
	kill -INT "$pid"
	"$AWAIT" "$D/term" || fail "the job got no SIGTERM"
	kill -INT "$pid"
	gone "$(cat "$D/pid.1")"
	{ wait "$pid"; } 2>/dev/null
	rc=$?
	wait "$watchdog"
	expect_rc 130
}

# A signal errgroup was started with ignored (nohup; SIGINT for a
# background command of a script) stays ignored: blocked for the
# signalfd, it would have been queued all the same.
test_signals_ignored_at_start_stay_ignored() {
	local pid watchdog
	(trap '' HUP INT TERM; exec "$EG" sh -c "echo > $D/up; $AWAIT $D/go" ::: a >"$D/out" 2>"$D/err") &
	pid=$!
	watch "$pid"
	"$AWAIT" "$D/up" || fail "the job did not start"
	kill -HUP "$pid"
	kill -INT "$pid"
	kill -TERM "$pid"
	touch "$D/go"
	wait "$pid"
	rc=$?
	wait "$watchdog"
	expect_rc 0
}

# errgroup ($pid) has no child left, and sleeps.
no_job_and_errgroup_asleep() {
	[ -z "$(cat /proc/"$pid"/task/*/children 2>/dev/null | tr -d ' ')" ] && asleep "$pid"
}

# Step for with_paused_reader: every job has ended, and errgroup sleeps,
# five times running: it waits to write the end of its output.
jobs_done_and_errgroup_waits() {
	steadily 2000 no_job_and_errgroup_asleep
}

# Once the jobs are done, a signal ends errgroup at once, as any program:
# blocked for the signalfd, it waited while --json waited for its reader,
# and was then lost (status 0).  The reader never reads.
test_signal_after_the_jobs_ends_errgroup_at_once() {
	local pid watchdog reader
	pause_reader "$D/fifo"
	# shellcheck disable=SC2046
	"$EG" --json -j 20 true ::: $(seq 500) >"$D/fifo" 2>"$D/err" &
	pid=$!
	watch "$pid"
	jobs_done_and_errgroup_waits
	kill -TERM "$pid"
	wait "$pid"
	rc=$?
	wait "$watchdog"
	end_reader
	expect_rc 143
}

# A job may leave the stdout it shares (-u) non-blocking, as Node.js does:
# --json still writes every line, waiting for the reader.
test_json_survives_a_stdout_a_job_made_non_blocking() {
	# shellcheck disable=SC2046
	with_paused_reader jobs_done_and_errgroup_waits -u --json -j 4 \
		perl -e 'use Fcntl; fcntl(STDOUT, F_SETFL, fcntl(STDOUT, F_GETFL, 0) | O_NONBLOCK)' \
		::: $(seq 400)
	expect_rc 0
}

# errgroup ($pid) has exited, or waits to write.
ended_or_waiting_to_write() {
	[ ! -e "/proc/$pid" ] || [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] ||
		waiting_to_write "$pid"
}

# The report, too, survives a stderr a job shared (-u) and left
# non-blocking, with the pipe full: stdio dropped it on EAGAIN.  It waits
# for the reader, who reads once errgroup has exited or waits to write.
# The job's command is longer than any buffer for one message.
test_report_survives_a_stderr_a_job_made_non_blocking() {
	local pid watchdog reader long
	long=$(printf '%05000d' 0)
	mkfifo "$D/fifo"
	{ "$AWAIT" "$D/go"; tr -d '#' >"$D/err"; } <"$D/fifo" &
	reader=$!
	"$EG" -u perl -e 'use Fcntl; fcntl(STDERR, F_SETFL, O_NONBLOCK);
		1 while defined syswrite(STDERR, chr(35) x 4096); exit 3' ::: "$long" \
		>"$D/out" 2>"$D/fifo" &
	pid=$!
	watch "$pid"
	steadily 1000 ended_or_waiting_to_write || fail "errgroup neither ended nor waited"
	touch "$D/go"
	wait "$pid"
	rc=$?
	wait "$watchdog"
	wait "$reader"
	expect_rc 3
	grep -qx "errgroup: job 1 (perl -e .* $long) exited with status 3" "$D/err" ||
		fail "no whole report on the job"
	expect_err "errgroup: 1 of 1 job failed"
}

# Starting hundreds of jobs (-j 0) takes a fork each: a failure, or a
# signal, that comes meanwhile stops the starts at once, not once every
# job has started.
test_failure_or_signal_during_a_burst_of_starts_stops_it() {
	local args=() i
	for i in $(seq 300); do
		args+=("exec sleep 1000")
	done
	eg -j 0 --grace 0 sh -c '{}' ::: 'exit 3' "${args[@]}"
	expect_rc 3
	grep -qE ', [1-9][0-9]* never started' "$D/err" || fail "every job started after the failure"
	# shellcheck disable=SC2016
	eg -j 0 --grace 0 sh -c '{}' ::: 'kill -TERM $PPID; exec sleep 1000' "${args[@]}"
	expect_rc 143
	grep -qE ', [1-9][0-9]* never started' "$D/err" || fail "every job started after the signal"
}

# waiting_to_write PID: errgroup sleeps in the poll of a write that waits
# for its reader (output.c wait_writable: 3 fds, where the loop's poll has
# 2 and 2 per running job).  x86-64 system call numbers, as above.
waiting_to_write() {
	asleep "$1" && [ "$(cut -d' ' -f1,3 "/proc/$1/syscall" 2>/dev/null)" = "7 0x3" ]
}

# A job log on a pipe whose reader pauses holds up no stop: its lines
# wait, as the jobs' output does.  Long commands fill the pipe.
test_job_log_whose_reader_pauses_holds_up_no_stop() {
	local long i pid watchdog reader drainer
	long=$(printf '%04000d' 0)
	{
		echo "echo \$\$ > $D/pid.s; exec sleep 1000"
		for i in $(seq 29); do
			echo ": $long; touch $D/q.$i"
		done
	} >"$D/jobs"
	pause_reader "$D/log"
	"$EG" -j 0 --grace 1 --joblog "$D/log" -a "$D/jobs" >"$D/out" 2>"$D/err" &
	pid=$!
	watch "$pid"
	# shellcheck disable=SC2046
	"$AWAIT" "$D/pid.s" $(for i in $(seq 29); do echo "$D/q.$i"; done) || fail "the jobs did not start"
	steadily 1000 waiting_to_write "$pid" || fail "errgroup never waited to write the job log"
	kill -TERM "$pid"
	gone "$(cat "$D/pid.s")"
	drain "$D/log"
	wait "$pid"
	rc=$?
	wait "$watchdog"
	undrain
	end_reader
	expect_rc 143
}

# waiting_to_open PID: errgroup sleeps in openat(2), x86-64 number 257, as
# it does opening a fifo that has no reader.
waiting_to_open() {
	asleep "$1" && [ "$(cut -d' ' -f1 "/proc/$1/syscall" 2>/dev/null)" = 257 ]
}

# signal_while STEP SIGNAL ARGS...: runs errgroup with ARGS in the
# background, sends it SIGNAL once the function STEP, given its pid,
# holds five times running; $rc as with eg.
signal_while() {
	local step=$1 sig=$2 pid watchdog
	shift 2
	env --default-signal=INT "$EG" "$@" >"$D/out" 2>"$D/err" &
	pid=$!
	watch "$pid"
	steadily 1000 "$step" "$pid" || fail "errgroup never waited ($step)"
	kill "-$sig" "$pid"
	{ wait "$pid"; } 2>/dev/null
	rc=$?
	wait "$watchdog"
}

# Before any job starts, errgroup may wait for the reader of its job log:
# to open a fifo, then to write the header into a pipe that is full.  A
# signal then ends it, as it ends a shell's >fifo; blocked for the
# signalfd, it did nothing, and only SIGKILL ended errgroup.
test_signal_ends_errgroup_waiting_for_its_job_log() {
	local sig status reader
	mkfifo "$D/log"
	for sig in INT:130 TERM:143 HUP:129; do
		status=${sig#*:}
		signal_while waiting_to_open "${sig%:*}" --joblog "$D/log" echo ::: a
		expect_rc "$status" || return
	done
	[ ! -s "$D/out" ] || fail "a job ran: '$(cat "$D/out")'"
	rm "$D/log"
	pause_reader "$D/log"
	perl -e 'use Fcntl; fcntl(STDOUT, F_SETFL, O_NONBLOCK);
		1 while defined syswrite(STDOUT, "x" x 4096)' >"$D/log"
	signal_while waiting_to_write TERM --joblog "$D/log" echo ::: a
	end_reader
	expect_rc 143
}

# A job log whose reader went away is errgroup's own failure, as its
# stdout's is: the jobs stop, the message names the cause, status 125.
test_job_log_that_cannot_be_written_stops_the_jobs() {
	local args=() i reader
	for i in $(seq 50); do
		args+=("$i")
	done
	mkfifo "$D/log"
	sh -c "head -c 1 >/dev/null; touch $D/reader_gone" <"$D/log" &
	reader=$!
	eg -j 1 --joblog "$D/log" sh -c "$AWAIT $D/reader_gone" ::: "${args[@]}"
	wait "$reader"
	expect_rc 125
	expect_err "cannot write the job log $D/log: Broken pipe"
	grep -qE ', [1-9][0-9]* never started' "$D/err" || fail "every job ran"
}

# JSON text is UTF-8: bytes that are not are written as U+FFFD.
test_json_is_valid_utf8() {
	eg --json true ::: $'caf\xe9' $'caf\xc3\xa9'
	expect_rc 0
	grep -q '"name":"caf\\ufffd"' "$D/out" || fail "the invalid byte was not replaced: $(head -1 "$D/out")"
	grep -q $'"name":"caf\xc3\xa9"' "$D/out" || fail "valid UTF-8 was changed: $(tail -1 "$D/out")"
}

# An argument with a newline or a tab is shown in $'...' quotes: the job
# log keeps one line of nine columns per job, the report one line.
test_control_characters_in_arguments_keep_one_line_per_job() {
	eg -k --joblog "$D/log" sh -c 'exit 3' ::: $'a\nb' $'c\td'
	expect_rc 3
	[ "$(wc -l <"$D/log")" -eq 3 ] || fail "the job log has $(wc -l <"$D/log") lines for 2 jobs"
	awk -F'\t' 'NF != 9 { bad = 1 } END { exit bad }' "$D/log" || fail "a job log line is not 9 columns"
	grep -qF "sh -c 'exit 3' \$'a\\nb'" "$D/log" || fail "no \$'a\\nb' in the job log"
	expect_err "\$'c\\td'"
	# Other control characters in octal: ksh reads every hex digit after
	# \x, and \x01 before "b" would be \x1b there.
	eg --joblog "$D/log" true ::: $'a\001b'
	grep -qF "true \$'a\\001b'" "$D/log" || fail "no \$'a\\001b' in the job log: $(tail -1 "$D/log")"
}

test_bar_draws_on_a_terminal() {
	command -v script >/dev/null || return 0   # util-linux, for a pty
	script -qec "$EG --bar sh -c 'echo {}' ::: a b" /dev/null >"$D/out" 2>"$D/err"
	rc=$?
	expect_rc 0
	grep -q '2/2 done, 0 failed, 0 running' "$D/out" || fail "no final progress line"
	# Cleared before the jobs' output: no line starts with the bar then text.
	sed 's/\x1b\[K//g' "$D/out" | tr '\r' '\n' | grep -q '^a$' || fail "output mixed with the bar"
}

# terminal_shows FILE: the lines a terminal shows for the bytes in FILE,
# which hold no controls but those --bar writes: \r, \n and ESC[K (erase
# to the end of the line).
terminal_shows() {
	perl -0777 -ne '
		my @lines = (""); my $col = 0;
		for (split /(\r|\n|\e\[K)/) {
			if ($_ eq "\n") { push @lines, ""; $col = 0 }
			elsif ($_ eq "\r") { $col = 0 }
			elsif ($_ eq "\e[K") { substr($lines[-1], $col) = "" }
			else { substr($lines[-1], $col, length) = $_; $col += length }
		}
		print "$_\n" for @lines' "$1"
}

# A job's output that ends without a newline stays on the terminal: the
# bar, drawn from the start of the cursor's line, erased it.  Output that
# goes elsewhere leaves the bar where it is.
test_bar_erases_no_unfinished_line() {
	command -v script >/dev/null || return 0   # util-linux, for a pty
	script -qec "$EG --bar sh -c 'printf out:{}; printf err:{} >&2' ::: a" /dev/null >"$D/out" 2>"$D/err"
	rc=$?
	expect_rc 0
	terminal_shows "$D/out" | grep -q '^out:aerr:a$' ||
		fail "the terminal shows '$(terminal_shows "$D/out")'"
	script -qec "$EG --bar sh -c 'printf out:{}' ::: a >$D/file" /dev/null >"$D/out" 2>"$D/err"
	rc=$?
	expect_rc 0
	[ "$(cat "$D/file")" = out:a ] || fail "stdout holds '$(cat "$D/file")'"
	[ "$(tr -cd '\n' <"$D/out" | wc -c)" -eq 0 ] || fail "the bar moved to a new line for output elsewhere"
}

# A message of errgroup's while the bar is drawn goes on a line of its
# own, the bar erased first, as a job's output does; it was written on
# the bar's line.  Job 2 cannot start: once the bar is drawn, errgroup
# is left no file descriptor to make its pipes with (prlimit), then job
# 1 ends.  The status is not checked, the report is: without a file
# descriptor, LeakSanitizer (make asan) fails at errgroup's exit.
test_message_under_the_bar_gets_a_line_of_its_own() {
	local session
	command -v script >/dev/null || return 0   # util-linux, for a pty
	command -v prlimit >/dev/null || return 0  # util-linux
	cat >"$D/jobs" <<EOF
echo \$PPID > $D/errgroup; $AWAIT $D/go
true
EOF
	timeout -k 5 30 script -qec "$EG --bar -j1 -a $D/jobs" /dev/null >"$D/tty" 2>&1 </dev/null &
	session=$!
	"$AWAIT" "$D/errgroup" || fail "job 1 did not start"
	shows '0/2 done' "$D/tty" || fail "the bar was never drawn"
	prlimit --pid "$(cat "$D/errgroup")" --nofile=3 || fail "prlimit failed"
	touch "$D/go"
	wait "$session"
	terminal_shows "$D/tty" | grep -q '^errgroup: cannot start job 2 (true): Too many open files$' ||
		fail "the terminal shows '$(terminal_shows "$D/tty")'"
	terminal_shows "$D/tty" | grep -qx 'errgroup: 0 of 2 jobs failed, 1 never started' ||
		fail "no report: the terminal shows '$(terminal_shows "$D/tty")'"
}

# A job in its own, background process group that read the terminal would
# stop for good (SIGTTIN): refused before any job starts.
# Jobs have no controlling terminal.  In their background process groups
# they were stopped for good by the terminal that controls errgroup: a
# write under `stty tostop` (SIGTTOU), a prompt on /dev/tty (SIGTTIN), a
# read of the terminal given with --stdin.  Now the write and the read
# work, and the prompt fails at once.
test_jobs_are_never_stopped_by_the_terminal() {
	command -v script >/dev/null || return 0   # util-linux, for a pty
	timeout -k 5 30 script -qec "stty tostop; $EG -u echo written ::: a" /dev/null >"$D/out" 2>&1
	rc=$?
	expect_rc 0
	grep -q 'written a' "$D/out" || fail "the write did not land: '$(head -c 300 "$D/out")'"
	timeout -k 5 30 script -qec "$EG sh -c 'read x </dev/tty' ::: a" /dev/null >"$D/out" 2>&1
	rc=$?
	expect_rc 2
	grep -q 'cannot open /dev/tty' "$D/out" || fail "no failed prompt: '$(head -c 300 "$D/out")'"
	printf 'typed\n' | timeout -k 5 30 script -qec "$EG --stdin sh -c 'read x; echo got \$x' ::: a" /dev/null >"$D/out" 2>&1
	rc=$?
	expect_rc 0
	grep -q 'got typed' "$D/out" || fail "the job did not read the terminal: '$(head -c 300 "$D/out")'"
}

test_bar_is_silent_off_a_terminal() {
	eg --bar echo ::: a
	expect_rc 0
	[ ! -s "$D/err" ] || fail "--bar wrote to a stderr that is not a terminal"
}

# pid_namespaces: unshare can make a pid namespace here (root, or user
# namespaces); the tests of errgroup as PID 1 are skipped where it cannot.
pid_namespaces() {
	unshare -fp --mount-proc true 2>/dev/null
}

# as_pid_1 ARGS...: as eg, with errgroup as PID 1 of a new pid namespace,
# as a container's entrypoint without an init is.
as_pid_1() {
	timeout -k 5 30 unshare -fp --mount-proc "$EG" "$@" >"$D/out" 2>"$D/err"
	rc=$?
}

# As PID 1, errgroup is the parent of every orphan in the namespace: what
# the leftover kill leaves of a job, a daemon a job starts.  Nothing
# reaped them, and their zombies piled up until a pids cgroup refused the
# jobs' forks.  Job 1 leaves a sleep that the leftover kill ends; job 2,
# after it (-j 1), waits up to 10 s for that sleep to be reaped (perl:
# a shell loop forks, and under load took longer than the 30 s timeout).
test_orphans_of_errgroup_as_pid_1_are_reaped() {
	pid_namespaces || return 0
	cat >"$D/jobs" <<EOF
sleep 1000 & echo \$! > $D/orphan
perl -e '\$end = time + 10; while (-e "/proc/\$ARGV[0]") { exit 9 if time > \$end; select(undef, undef, undef, 0.01) }' \$(cat $D/orphan)
EOF
	as_pid_1 -j 1 -a "$D/jobs"
	[ "$rc" -ne 9 ] || fail "the orphan was never reaped"
	expect_rc 0
}

# As PID 1, errgroup exits with the status it has anywhere, and with
# 128+N if it is killed by signal N, as a shell reports it: PID 1 cannot
# die of a signal of its own.  (A SIGKILL from inside the namespace did
# nothing to errgroup as PID 1, which the kernel shields.)
test_status_of_errgroup_as_pid_1_is_as_anywhere() {
	pid_namespaces || return 0
	as_pid_1 sh -c 'exit 3' ::: a
	expect_rc 3
	as_pid_1 sh -c 'kill -SEGV $$' ::: a
	expect_rc 139
	expect_err "was killed by SIGSEGV"
	as_pid_1 --bogus true
	expect_rc 125
	as_pid_1 sh -c 'kill -KILL $PPID' ::: a
	expect_rc 137
}

# in_namespace NS: the pids of the processes in the pid namespace NS (as
# /proc/PID/ns/pid names it).
in_namespace() {
	local p
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$1" ] && echo "${p#/proc/}"
	done
}

# docker stop sends SIGTERM to PID 1 from outside the namespace: the jobs
# are stopped as always (their TERM traps run), and the status is 143.
# unshare -f forks PID 1, whose pid here is its child's.
test_sigterm_to_errgroup_as_pid_1_stops_the_jobs() {
	local pid watchdog pid_1 namespace left
	pid_namespaces || return 0
	cat >"$D/jobs" <<EOF
trap 'echo > $D/term.1; exit 0' TERM; sleep 1000 & echo > $D/up.1; wait
trap 'echo > $D/term.2; exit 0' TERM; sleep 1000 & echo > $D/up.2; wait
EOF
	unshare -fp --mount-proc "$EG" -j 2 -a "$D/jobs" >"$D/out" 2>"$D/err" &
	pid=$!
	watch "$pid"
	"$AWAIT" "$D/up.1" "$D/up.2" || fail "the jobs did not start"
	read -r pid_1 <"/proc/$pid/task/$pid/children"
	namespace=$(readlink "/proc/$pid_1/ns/pid") || fail "no PID 1 under unshare"
	kill -TERM "$pid_1"
	wait "$pid"
	rc=$?
	wait "$watchdog"
	expect_rc 143
	expect_err "stopped by SIGTERM"
	[ -e "$D/term.1" ] && [ -e "$D/term.2" ] || fail "a job got no SIGTERM"
	left=$(in_namespace "$namespace")
	if [ -n "$left" ]; then
		fail "left in the namespace:" $left
		kill -KILL "$pid_1"
	fi
}

# The command runs with the signal mask errgroup was started with, not
# with PID 1's, which blocks every signal: a SIGUSR1 passed on from PID 1
# ends errgroup (138), as it does anywhere.  A job sends it, through
# PID 1; with the mask left blocked, errgroup ran on until the timeout.
test_command_under_pid_1_has_the_starting_signal_mask() {
	pid_namespaces || return 0
	as_pid_1 sh -c 'kill -USR1 1; exec sleep 1000' ::: a
	expect_rc 138
}

# Under a terminal that PID 1 holds as its session's (docker run -t), a
# hangup sends SIGHUP to the session leader alone, PID 1, which passes it
# on: errgroup stops the jobs (their traps run).  PID 1 had taken it for
# one of the terminal's signals to the whole process group, which reach
# the command anyway, and errgroup ran on for ever.  The pty is
# script's; killing script hangs it up.
test_hangup_reaches_errgroup_as_pid_1_leading_the_session() {
	local pid
	pid_namespaces || return 0
	command -v script >/dev/null || return 0   # util-linux, for a pty
	cat >"$D/jobs" <<JOBS
trap 'echo > $D/hup.1; exit 0' HUP TERM; sleep 1000 & echo > $D/up.1; wait
trap 'echo > $D/hup.2; exit 0' HUP TERM; sleep 1000 & echo > $D/up.2; wait
JOBS
	script -qec "unshare -fp --mount-proc setsid -c $EG -j 2 -a $D/jobs" /dev/null \
		>"$D/tty" 2>&1 </dev/null &
	pid=$!
	"$AWAIT" "$D/up.1" "$D/up.2" || fail "the jobs did not start"
	kill -KILL "$pid"
	wait "$pid"
	"$AWAIT" "$D/hup.1" "$D/hup.2" || {
		fail "the hangup did not reach the jobs"
		pkill -KILL -f -- "-a $D/jobs"
	}
}

start=$EPOCHREALTIME
tests=$(declare -F | awk '$3 ~ /^test_/ { print $3 }')
total=0
broken=0
for test in $tests; do
	D="$TMP/$test"
	mkdir -p "$D"
	total=$((total + 1))
	# Each test in a subshell, in its own directory: fail() counts there.
	if (cd "$D" || exit 1; "$test"; exit "$failed"); then
		echo "ok   $test"
	else
		echo "FAIL $test"
		broken=$((broken + 1))
	fi
done
elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
if [ "$broken" -ne 0 ]; then
	echo "errgroup CLI: $broken of $total tests failed (${elapsed}s)"
	exit 1
fi
echo "errgroup CLI: all $total tests passed in ${elapsed}s"
