/*
 * test_timeout.c - per-task timeouts and the group's deadline: the cause
 * and code they give, the SIGKILL after the grace, cancel-on-error, go()
 * refused after the deadline (also a go() blocked at the limit), stopped
 * children, and the timer firing while the caller is busy elsewhere.
 *
 * Tasks that must time out block forever (on a pipe no one writes), so
 * the outcome never depends on how fast the machine is; only lower bounds
 * on time are asserted.  A task's timer runs from its start, so one that
 * must first set itself up (ignore SIGTERM, block it, stop) may be killed
 * before it has, on a machine slower than the timer (valgrind, TSan, a
 * loaded CI).  Such a task tells its word once set up; a run without the
 * word proved nothing, and the test runs again with timers twice as long,
 * up to SLOWEST_TIMER_MS.  Nothing waits for the word of a task that may
 * die first.
 */
#include "helpers.h"

#include <limits.h>
#include <pthread.h>
#include <time.h>

static int never[2];   /* a pipe nobody writes: tasks block on it */

static int setup(void **state)
{
	(void)state;
	ready_pipe_open();
	return pipe2(never, O_CLOEXEC);
}

static int teardown(void **state)
{
	(void)state;
	ready_pipe_close();
	close(never[0]);
	close(never[1]);
	return 0;
}

/* The longest timer a test tries, doubling from 50 ms: 8 runs. */
#define SLOWEST_TIMER_MS 6400

/* Takes one task's word if it sent one, without waiting: for a task that
 * has ended, whether it had set itself up before its timer fired. */
static bool took_word(void)
{
	struct pollfd p = { .fd = ready_pipe[0], .events = POLLIN };
	int word;

	if (poll(&p, 1, 0) != 1)
		return false;
	assert_int_equal(read(ready_pipe[0], &word, sizeof word), sizeof word);
	return true;
}

/* The words of tasks that may have died before they told them. */
static void drop_words(void)
{
	while (took_word())
		;
}

static uint64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int block_forever(void *arg)
{
	(void)arg;
	tell_word(getpid());
	read_byte(never[0]);
	return 0;
}

static int ignore_sigterm_and_block(void *arg)
{
	(void)arg;
	signal(SIGTERM, SIG_IGN);
	tell_word(getpid());
	read_byte(never[0]);
	return 0;
}

/* Leaves cleanly, with status 0, when told to stop.  It takes SIGTERM
 * with sigwaitinfo rather than a handler, which a sanitizer's runtime may
 * defer. */
static int exit_0_on_sigterm(void *arg)
{
	sigset_t term;

	(void)arg;
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigprocmask(SIG_BLOCK, &term, NULL);
	tell_word(getpid());
	while (sigwaitinfo(&term, NULL) < 0)
		;
	return 0;
}

static int stop_self(void *arg)
{
	(void)arg;
	tell_word(getpid());
	raise(SIGSTOP);
	read_byte(never[0]);
	return 0;
}

static int succeed(void *arg)
{
	(void)arg;
	return 0;
}

static void test_task_past_its_timeout_fails_with_timeout_and_sigterm(void **state)
{
	errgroup *g = errgroup_new();
	const struct errgroup_error *e;
	uint64_t start = monotonic_ms();

	(void)state;
	assert_int_equal(errgroup_set_timeout_ms(g, 100), 0);
	assert_int_equal(errgroup_go(g, block_forever, NULL), 0);
	e = errgroup_wait(g);
	assert_true(monotonic_ms() - start >= 100);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_TIMEOUT);
	assert_int_equal(e->code, SIGTERM);
	assert_string_equal(e->message, "timed out: killed by signal 15 (SIGTERM)");
	drop_words();
	errgroup_free(g);
	assert_true(no_children_left());
}

static void test_task_done_in_time_is_a_success(void **state)
{
	errgroup *g = errgroup_new();

	(void)state;
	assert_int_equal(errgroup_set_timeout_ms(g, WAIT_LIMIT_MS), 0);
	for (int i = 0; i < 20; i++)
		assert_int_equal(errgroup_go(g, succeed, NULL), i);
	assert_null(errgroup_wait(g));
	/* The group is not spent: more tasks run, with their own timers. */
	assert_int_equal(errgroup_go(g, succeed, NULL), 20);
	assert_null(errgroup_wait(g));
	errgroup_free(g);
}

/* Waits for g's one task, ignore_sigterm_and_block, and frees g.  True if
 * the task had set itself up: it then timed out by SIGKILL, no sooner than
 * min_ms after start.  False if the run proved nothing, the task killed
 * before it ignored SIGTERM, or stalled between that and its word past the
 * grace. */
static bool sigkilled_after_ignoring_sigterm(errgroup *g, uint64_t start, uint64_t min_ms)
{
	const struct errgroup_error *e = errgroup_wait(g);
	bool ready = took_word();

	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_TIMEOUT);
	if (ready) {
		assert_true(monotonic_ms() - start >= min_ms);
		assert_int_equal(e->code, SIGKILL);
	} else {
		assert_true(e->code == SIGTERM || e->code == SIGKILL);
	}
	errgroup_free(g);
	return ready;
}

static void test_timeout_ignored_sigterm_gets_sigkill_after_grace(void **state)
{
	uint64_t start;
	errgroup *g;

	(void)state;
	if (under_valgrind())
		skip();   /* valgrind's own signal handling */
	for (unsigned ms = 50;; ms *= 2) {
		assert_true(ms <= SLOWEST_TIMER_MS);
		g = errgroup_new();
		errgroup_set_timeout_ms(g, ms);
		errgroup_set_grace_ms(g, 100);
		start = monotonic_ms();
		assert_int_equal(errgroup_go(g, ignore_sigterm_and_block, NULL), 0);
		if (sigkilled_after_ignoring_sigterm(g, start, ms + 100))
			break;
	}
}

static void test_timed_out_task_that_exits_0_still_fails(void **state)
{
	const struct errgroup_error *e;
	errgroup *g;
	bool ready;

	(void)state;
	for (unsigned ms = 50;; ms *= 2) {
		assert_true(ms <= SLOWEST_TIMER_MS);
		g = errgroup_new();
		errgroup_set_timeout_ms(g, ms);
		assert_int_equal(errgroup_go(g, exit_0_on_sigterm, NULL), 0);
		e = errgroup_wait(g);
		ready = took_word();
		assert_non_null(e);
		assert_int_equal(e->cause, ERRGROUP_TIMEOUT);
		assert_int_equal(e->code, ready ? 0 : SIGTERM);
		errgroup_free(g);
		if (ready)
			break;
	}
}

/*
 * Whether the task stopped before its timer fired.  It tells its pid, then
 * stops: a stop seen means SIGTERM came after it, since a task that took
 * SIGTERM unstopped was dead at once.  Waits for the pid, or for the task's
 * death (the read end of life, whose write end only the task holds, hangs
 * up), then for the stop or the end, which the library's reap may take
 * first (ECHILD).
 */
static bool task_stopped(int life_rx)
{
	int r, pid = await_word_or_hangup(life_rx);
	siginfo_t si;

	if (!pid)
		return false;
	do {
		memset(&si, 0, sizeof si);
		r = waitid(P_PID, (id_t)pid, &si, WSTOPPED | WEXITED | WNOWAIT);
	} while (r < 0 && errno == EINTR);
	return r == 0 && si.si_code == CLD_STOPPED;
}

static void test_stopped_task_still_times_out(void **state)
{
	const struct errgroup_error *e;
	int life[2];
	errgroup *g;
	bool ready;

	(void)state;
	for (unsigned ms = 50;; ms *= 2) {
		assert_true(ms <= SLOWEST_TIMER_MS);
		g = errgroup_new();
		assert_int_equal(pipe2(life, O_CLOEXEC), 0);
		errgroup_set_timeout_ms(g, ms);
		errgroup_set_grace_ms(g, WAIT_LIMIT_MS);
		assert_int_equal(errgroup_go(g, stop_self, NULL), 0);
		close(life[1]);
		ready = task_stopped(life[0]);
		close(life[0]);
		/* SIGCONT comes with SIGTERM, long before the grace ends. */
		e = errgroup_wait(g);
		assert_non_null(e);
		assert_int_equal(e->cause, ERRGROUP_TIMEOUT);
		assert_int_equal(e->code, SIGTERM);
		errgroup_free(g);
		if (ready)
			break;
	}
}

static void test_timeout_under_cancel_on_error_cancels_the_rest(void **state)
{
	errgroup *g = errgroup_new();
	const struct errgroup_error *e;

	(void)state;
	errgroup_set_cancel_on_error(g, true);
	assert_int_equal(errgroup_go(g, block_forever, NULL), 0);
	await_word();
	/* Only the second task has a timer. */
	errgroup_set_timeout_ms(g, 50);
	assert_int_equal(errgroup_go(g, block_forever, NULL), 1);
	e = errgroup_wait(g);
	drop_words();
	assert_non_null(e);
	assert_int_equal(e->task, 1);
	assert_int_equal(e->cause, ERRGROUP_TIMEOUT);
	assert_int_equal(errgroup_error_count(g), 2);
	e = errgroup_error_at(g, 1);
	assert_int_equal(e->task, 0);
	assert_int_equal(e->cause, ERRGROUP_CANCELED);
	assert_int_equal(errgroup_go(g, succeed, NULL), -ECANCELED);
	errgroup_free(g);
}

/* life is a pipe made before the task's fork, so that the task holds its
 * write end: once ours is closed, the read end hangs up when the task
 * dies, however early.  Fails after WAIT_LIMIT_MS; closes the pipe. */
static void assert_task_dies(int life[2])
{
	struct pollfd p = { .fd = life[0], .events = POLLIN };

	close(life[1]);
	assert_int_equal(poll(&p, 1, WAIT_LIMIT_MS), 1);
	assert_true(p.revents & POLLHUP);
	close(life[0]);
}

/* The caller never waits: the supervisor's timer must stop the task. */
static void test_timeout_fires_while_the_caller_is_busy(void **state)
{
	errgroup *g = errgroup_new();
	int life[2];

	(void)state;
	assert_int_equal(pipe2(life, O_CLOEXEC), 0);
	errgroup_set_timeout_ms(g, 50);
	assert_int_equal(errgroup_go(g, block_forever, NULL), 0);
	assert_task_dies(life);
	assert_int_equal(errgroup_wait(g)->cause, ERRGROUP_TIMEOUT);
	drop_words();
	errgroup_free(g);
}

static struct timespec in_ms(unsigned ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return ts;
}

static void test_deadline_stops_every_task_and_is_final(void **state)
{
	struct timespec deadline = in_ms(100);
	errgroup *g = errgroup_new();
	const struct errgroup_error *e;
	uint64_t start = monotonic_ms();

	(void)state;
	assert_int_equal(errgroup_set_deadline(g, &deadline), 0);
	assert_int_equal(errgroup_go(g, block_forever, NULL), 0);
	assert_int_equal(errgroup_go(g, block_forever, NULL), 1);
	errgroup_wait(g);
	drop_words();
	assert_true(monotonic_ms() - start >= 100);
	assert_int_equal(errgroup_error_count(g), 2);
	for (size_t i = 0; i < 2; i++) {
		e = errgroup_error_at(g, i);
		assert_int_equal(e->cause, ERRGROUP_TIMEOUT);
		assert_int_equal(e->code, SIGTERM);
	}
	assert_int_equal(errgroup_go(g, succeed, NULL), -ETIMEDOUT);
	/* A new deadline does not revive the group. */
	deadline = in_ms(WAIT_LIMIT_MS);
	assert_int_equal(errgroup_set_deadline(g, &deadline), 0);
	assert_int_equal(errgroup_try_go(g, succeed, NULL), -ETIMEDOUT);
	errgroup_free(g);
	assert_true(no_children_left());
}

static void test_deadline_passed_refuses_go_without_forking(void **state)
{
	struct timespec past = in_ms(0);
	errgroup *g = errgroup_new();

	(void)state;
	assert_int_equal(errgroup_set_deadline(g, &past), 0);
	assert_int_equal(errgroup_go(g, succeed, NULL), -ETIMEDOUT);
	assert_null(errgroup_wait(g));
	assert_true(no_children_left());
	errgroup_free(g);
}

static void test_go_blocked_at_the_limit_returns_etimedout(void **state)
{
	struct timespec deadline;
	errgroup *g = errgroup_new();

	(void)state;
	errgroup_set_limit(g, 1);
	assert_int_equal(errgroup_go(g, block_forever, NULL), 0);
	await_word();
	deadline = in_ms(100);
	errgroup_set_deadline(g, &deadline);
	assert_int_equal(errgroup_go(g, succeed, NULL), -ETIMEDOUT);
	assert_int_equal(errgroup_wait(g)->cause, ERRGROUP_TIMEOUT);
	errgroup_free(g);
}

static void test_deadline_removed_in_time_stops_nothing(void **state)
{
	struct timespec deadline = in_ms(50), bad = { 0, 1000000000 };
	errgroup *g = errgroup_new();

	(void)state;
	assert_int_equal(errgroup_set_deadline(g, &bad), -EINVAL);
	assert_int_equal(errgroup_set_deadline(g, &deadline), 0);
	assert_int_equal(errgroup_set_deadline(g, NULL), 0);
	assert_int_equal(errgroup_go(g, exit_0_on_sigterm, NULL), 0);
	await_word();
	/* Well past the old deadline, the task still runs: it answers. */
	poll(NULL, 0, 100);
	errgroup_cancel(g);
	assert_null(errgroup_wait(g));   /* it exited 0 on SIGTERM: a success */
	errgroup_free(g);
}

/* Sleeps until the monotonic clock has passed ts. */
static void sleep_until(const struct timespec *ts)
{
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, ts, NULL) != 0)
		;
}

/* No call looked at the group while its deadline passed: the deadline is
 * final all the same, and neither removing it nor a later one revives the
 * group. */
static void test_deadline_that_passed_unnoticed_is_final(void **state)
{
	struct timespec deadline, later;
	errgroup *g;

	(void)state;
	for (int replace = 0; replace < 2; replace++) {
		g = errgroup_new();
		assert_non_null(g);
		deadline = in_ms(1);
		assert_int_equal(errgroup_set_deadline(g, &deadline), 0);
		sleep_until(&deadline);
		later = in_ms(WAIT_LIMIT_MS);
		assert_int_equal(errgroup_set_deadline(g, replace ? &later : NULL), 0);
		assert_int_equal(errgroup_go(g, succeed, NULL), -ETIMEDOUT);
		assert_int_equal(errgroup_try_go(g, succeed, NULL), -ETIMEDOUT);
		assert_null(errgroup_wait(g));
		errgroup_free(g);
	}
	assert_true(no_children_left());
}

/* try_go at the limit the moment the deadline has passed: the group is
 * closed, and says so before the supervisor has noticed, which it does up
 * to a millisecond later.  It used to say -EAGAIN, as if room would come. */
static void test_try_go_at_the_limit_past_the_deadline_says_etimedout(void **state)
{
	struct timespec deadline;
	errgroup *g;

	(void)state;
	for (int round = 0; round < 3; round++) {
		g = errgroup_new();
		assert_non_null(g);
		assert_int_equal(errgroup_set_limit(g, 1), 0);
		assert_int_equal(errgroup_go(g, block_forever, NULL), 0);
		await_word();
		deadline = in_ms(20);
		assert_int_equal(errgroup_set_deadline(g, &deadline), 0);
		sleep_until(&deadline);
		assert_int_equal(errgroup_try_go(g, succeed, NULL), -ETIMEDOUT);
		assert_int_equal(errgroup_wait(g)->cause, ERRGROUP_TIMEOUT);
		errgroup_free(g);
	}
	assert_true(no_children_left());
}

/* Cancellation and the deadline are both final; the first to come says
 * why go() is refused from then on, also a deadline that passed before
 * the cancel without anyone noticing. */
static void test_cancel_and_deadline_the_first_decides(void **state)
{
	struct timespec deadline;
	errgroup *g;

	(void)state;
	g = errgroup_new();
	assert_non_null(g);
	errgroup_cancel(g);
	deadline = in_ms(0);
	assert_int_equal(errgroup_set_deadline(g, &deadline), 0);
	assert_int_equal(errgroup_go(g, succeed, NULL), -ECANCELED);
	errgroup_free(g);

	g = errgroup_new();
	assert_non_null(g);
	deadline = in_ms(1);
	assert_int_equal(errgroup_set_deadline(g, &deadline), 0);
	sleep_until(&deadline);
	errgroup_cancel(g);
	assert_int_equal(errgroup_go(g, succeed, NULL), -ETIMEDOUT);
	errgroup_free(g);
	assert_true(no_children_left());
}

/*
 * Another thread sets a timeout while a go() forks: the task gets it, and
 * so it must get the supervisor that enforces it while the caller is
 * busy, though its go() had decided that it needed none.  A fork handler
 * hands over to that thread at the moment of the fork.
 */
static errgroup *hook_group;
static bool hook_armed;
static int hook_to_thread[2], hook_from_thread[2];
static pthread_once_t hook_once = PTHREAD_ONCE_INIT;

static void hook_prepare(void)
{
	if (!hook_armed)
		return;
	hook_armed = false;
	assert_int_equal(write(hook_to_thread[1], "x", 1), 1);
	read_byte(hook_from_thread[0]);
}

static void install_hook(void)
{
	pthread_atfork(hook_prepare, NULL, NULL);
}

static void *set_timeout_when_told(void *arg)
{
	int *r = arg;

	if (read_byte(hook_to_thread[0]) < 0)
		return NULL;
	*r = errgroup_set_timeout_ms(hook_group, 50);
	if (write(hook_from_thread[1], "x", 1) != 1)
		*r = -EIO;
	return NULL;
}

static void test_timeout_set_during_a_start_is_kept_while_the_caller_is_busy(void **state)
{
	int life[2], r = 1;
	pthread_t thread;

	(void)state;
	pthread_once(&hook_once, install_hook);
	hook_group = errgroup_new();
	assert_non_null(hook_group);
	assert_int_equal(pipe2(hook_to_thread, O_CLOEXEC), 0);
	assert_int_equal(pipe2(hook_from_thread, O_CLOEXEC), 0);
	assert_int_equal(pipe2(life, O_CLOEXEC), 0);
	assert_int_equal(pthread_create(&thread, NULL, set_timeout_when_told, &r), 0);
	hook_armed = true;
	assert_int_equal(errgroup_go(hook_group, block_forever, NULL), 0);
	assert_false(hook_armed);
	pthread_join(thread, NULL);
	assert_int_equal(r, 0);
	assert_task_dies(life);
	assert_int_equal(errgroup_wait(hook_group)->cause, ERRGROUP_TIMEOUT);
	drop_words();
	errgroup_free(hook_group);
	for (int i = 0; i < 2; i++) {
		close(hook_to_thread[i]);
		close(hook_from_thread[i]);
	}
}

/* A deadline whose nanoseconds do not fit in 64 bits is centuries away:
 * the group runs as without one, where a wrapped sum would have put it in
 * the past.  The last one is the first whose seconds fit but whose sum
 * does not. */
static void test_deadline_centuries_away_never_expires(void **state)
{
	const struct timespec far[] = {
		{ 18446744074, 0 },
		{ LONG_MAX, 999999999 },
		{ 18446744073, 999999999 },
	};
	errgroup *g;

	(void)state;
	for (size_t i = 0; i < sizeof far / sizeof far[0]; i++) {
		g = errgroup_new();
		assert_non_null(g);
		assert_int_equal(errgroup_set_deadline(g, &far[i]), 0);
		assert_int_equal(errgroup_go(g, succeed, NULL), 0);
		assert_null(errgroup_wait(g));
		assert_int_equal(errgroup_go(g, succeed, NULL), 1);
		assert_null(errgroup_wait(g));
		errgroup_free(g);
	}
}

/* Stopped by the deadline first: the grace then runs from the deadline,
 * and the task's own timeout, due meanwhile, does not cut it short. */
static void test_deadline_grace_is_not_cut_by_a_later_timeout(void **state)
{
	struct timespec deadline;
	uint64_t start;
	errgroup *g;

	(void)state;
	if (under_valgrind())
		skip();   /* valgrind's own signal handling */
	for (unsigned ms = 50;; ms *= 2) {
		assert_true(ms <= SLOWEST_TIMER_MS);
		g = errgroup_new();
		errgroup_set_timeout_ms(g, 3 * ms);
		errgroup_set_grace_ms(g, 8 * ms);
		start = monotonic_ms();
		deadline = in_ms(ms);
		errgroup_set_deadline(g, &deadline);
		assert_int_equal(errgroup_go(g, ignore_sigterm_and_block, NULL), 0);
		if (sigkilled_after_ignoring_sigterm(g, start, 9 * ms))
			break;
	}
}

static void test_timeout_applies_to_commands(void **state)
{
	const char *const argv[] = { "sleep", "1000", NULL };
	struct errgroup_cmd cmd = { .argv = argv };
	errgroup *g = errgroup_new();
	const struct errgroup_error *e;

	(void)state;
	errgroup_set_timeout_ms(g, 50);
	assert_int_equal(errgroup_go_cmd(g, &cmd), 0);
	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_TIMEOUT);
	assert_int_equal(e->code, SIGTERM);
	errgroup_free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		census_test(test_task_past_its_timeout_fails_with_timeout_and_sigterm),
		census_test(test_task_done_in_time_is_a_success),
		census_test(test_timeout_ignored_sigterm_gets_sigkill_after_grace),
		census_test(test_timed_out_task_that_exits_0_still_fails),
		census_test(test_stopped_task_still_times_out),
		census_test(test_timeout_under_cancel_on_error_cancels_the_rest),
		census_test(test_timeout_fires_while_the_caller_is_busy),
		census_test(test_deadline_stops_every_task_and_is_final),
		census_test(test_deadline_passed_refuses_go_without_forking),
		census_test(test_go_blocked_at_the_limit_returns_etimedout),
		census_test(test_deadline_removed_in_time_stops_nothing),
		census_test(test_deadline_centuries_away_never_expires),
		census_test(test_deadline_grace_is_not_cut_by_a_later_timeout),
		census_test(test_timeout_applies_to_commands),
		census_test(test_deadline_that_passed_unnoticed_is_final),
		census_test(test_cancel_and_deadline_the_first_decides),
		census_test(test_try_go_at_the_limit_past_the_deadline_says_etimedout),
		census_test(test_timeout_set_during_a_start_is_kept_while_the_caller_is_busy),
	};

	census_begin();
	return cmocka_run_group_tests(tests, setup, teardown);
}
