/*
 * test_threads.c - the group used from several threads at once: go() from
 * four threads, wait() from two, cancel racing go(), and pthread_cancel of
 * a thread blocked in wait() or go().
 *
 * cmocka's asserts are not thread-safe: the threads only record what they
 * saw in arrays, and the main thread asserts after joining them.  Tasks
 * record that they ran in shared memory, one slot per task.
 */
#include "helpers.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/single_threaded.h>
#include <sys/syscall.h>
#include <time.h>

#define THREADS 4
#define TASKS_PER_THREAD 100
#define TASKS (THREADS * TASKS_PER_THREAD)
#define WAIT_LIMIT_MS 30000

/* Per submitted task (thread * TASKS_PER_THREAD + i), in shared memory. */
struct task_log {
	int ran[TASKS];        /* the task's function started */
	int failing[TASKS];    /* it was about to return nonzero */
	int forks;             /* children created (an atfork child handler) */
};

static struct task_log *task_log;

static void count_child(void)
{
	if (task_log)
		__atomic_add_fetch(&task_log->forks, 1, __ATOMIC_SEQ_CST);
}

static int setup_count_forks(void **state)
{
	(void)state;
	return pthread_atfork(NULL, NULL, count_child) == 0 ? 0 : -1;
}

static uint64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The system call thread tid is blocked in (-1 when it runs). */
static long thread_syscall(pid_t tid, unsigned long long *ret_timeout_arg)
{
	unsigned long long args[6] = { 0 };
	long nr;

	if (read_thread_syscall(tid, &nr, args) < 5)
		nr = -1;
	*ret_timeout_arg = args[3];
	return nr;
}

/* Blocked in the library: polling (epoll_wait with a timeout other than
 * poll_ready's 0) or sleeping on the group's condition variable. */
static bool thread_blocked_in_library(pid_t tid)
{
	unsigned long long timeout;
	long nr = thread_syscall(tid, &timeout);

#ifdef SYS_epoll_wait
	if (nr == SYS_epoll_wait)
		return timeout != 0;
#endif
	if (nr == SYS_epoll_pwait)
		return timeout != 0;
	return nr == SYS_futex;
}

/* Until the thread whose id *tid will hold is blocked in the library. */
static void wait_until_blocked_in_library(_Atomic pid_t *tid)
{
	uint64_t give_up = monotonic_ms() + WAIT_LIMIT_MS;

	while ((atomic_load(tid) == 0 || !thread_blocked_in_library(atomic_load(tid))) &&
	       monotonic_ms() < give_up)
		sched_yield();
}

static int record_and_return(void *arg)
{
	int id = (int)(intptr_t)arg;

	__atomic_add_fetch(&task_log->ran[id], 1, __ATOMIC_SEQ_CST);
	if (id % 7 == 3) {
		__atomic_store_n(&task_log->failing[id], 1, __ATOMIC_SEQ_CST);
		return 2;
	}
	return 0;
}

static int record_and_succeed(void *arg)
{
	int id = (int)(intptr_t)arg;

	__atomic_add_fetch(&task_log->ran[id], 1, __ATOMIC_SEQ_CST);
	return 0;
}

/* ---- go() from four threads ---- */

struct submitter {
	errgroup *g;
	int thread;
	errgroup_task *fn;
	pthread_barrier_t *start;
	atomic_int *accepted;          /* go() calls that returned an index */
	int result[TASKS_PER_THREAD];  /* what each go() returned */
};

static void *submit(void *arg)
{
	struct submitter *s = arg;

	pthread_barrier_wait(s->start);
	for (int i = 0; i < TASKS_PER_THREAD; i++) {
		int id = s->thread * TASKS_PER_THREAD + i;

		s->result[i] = errgroup_go(s->g, s->fn, (void *)(intptr_t)id);
		if (s->result[i] >= 0 && s->accepted)
			atomic_fetch_add(s->accepted, 1);
	}
	return NULL;
}

static void test_go_from_four_threads_gives_unique_indices_and_runs_each_task_once(void **state)
{
	static struct submitter subs[THREADS];
	static bool seen[TASKS];
	pthread_barrier_t start;
	pthread_t threads[THREADS];
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	task_log = shared_alloc(sizeof *task_log);
	assert_int_equal(errgroup_set_limit(g, 3), 0);
	assert_int_equal(pthread_barrier_init(&start, NULL, THREADS), 0);
	for (int t = 0; t < THREADS; t++) {
		subs[t] = (struct submitter){ .g = g, .thread = t, .fn = record_and_succeed,
					      .start = &start };
		assert_int_equal(pthread_create(&threads[t], NULL, submit, &subs[t]), 0);
	}
	for (int t = 0; t < THREADS; t++)
		assert_int_equal(pthread_join(threads[t], NULL), 0);
	assert_null(errgroup_wait(g));

	memset(seen, 0, sizeof seen);
	for (int t = 0; t < THREADS; t++) {
		for (int i = 0; i < TASKS_PER_THREAD; i++) {
			int index = subs[t].result[i];

			assert_in_range(index, 0, TASKS - 1);
			assert_false(seen[index]);
			seen[index] = true;
		}
	}
	for (int id = 0; id < TASKS; id++)
		assert_int_equal(task_log->ran[id], 1);
	assert_int_equal(task_log->forks, TASKS);

	pthread_barrier_destroy(&start);
	errgroup_free(g);
	shared_free(task_log, sizeof *task_log);
	task_log = NULL;
	assert_true(no_children_left());
}

/* ---- wait() from two threads ---- */

struct waiter {
	errgroup *g;
	_Atomic pid_t tid;
	const struct errgroup_error *result;
};

static void *wait_for_group(void *arg)
{
	struct waiter *w = arg;

	atomic_store(&w->tid, gettid());
	w->result = errgroup_wait(w->g);
	return NULL;
}

static int gate[2];

static int wait_at_gate_then_return_arg(void *arg)
{
	if (read_byte(gate[0]) < 0)
		return 99;
	return (int)(intptr_t)arg;
}

static void test_wait_from_two_threads_at_once_both_return_the_first_error(void **state)
{
	struct waiter waiters[2];
	pthread_t threads[2];
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	assert_int_equal(pipe2(gate, O_CLOEXEC), 0);
	assert_int_equal(errgroup_go(g, wait_at_gate_then_return_arg, NULL), 0);
	assert_int_equal(errgroup_go(g, wait_at_gate_then_return_arg, (void *)(intptr_t)5), 1);
	assert_int_equal(errgroup_go(g, wait_at_gate_then_return_arg, NULL), 2);

	for (int i = 0; i < 2; i++) {
		waiters[i] = (struct waiter){ .g = g };
		assert_int_equal(pthread_create(&threads[i], NULL, wait_for_group, &waiters[i]), 0);
	}
	/* Both waiters inside wait before the tasks may end. */
	for (int i = 0; i < 2; i++)
		wait_until_blocked_in_library(&waiters[i].tid);
	gate_open_n(gate[1], 3);

	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(threads[i], NULL), 0);
	assert_non_null(waiters[0].result);
	assert_ptr_equal(waiters[0].result, waiters[1].result);
	assert_int_equal(waiters[0].result->task, 1);
	assert_int_equal(waiters[0].result->code, 5);
	assert_int_equal(errgroup_error_count(g), 1);
	errgroup_free(g);
	close(gate[0]);
	close(gate[1]);
	assert_true(no_children_left());
}

/* ---- pthread_cancel of a thread inside the library ---- */

struct cancel_target {
	errgroup *g;
	_Atomic pid_t tid;
	atomic_int returned;           /* the call returned before the cancel acted */
	const struct errgroup_error *result;
};

static void *wait_then_honour_cancel(void *arg)
{
	struct cancel_target *c = arg;

	atomic_store(&c->tid, gettid());
	c->result = errgroup_wait(c->g);
	atomic_store(&c->returned, 1);
	pthread_testcancel();
	return NULL;
}

static void *go_then_honour_cancel(void *arg)
{
	struct cancel_target *c = arg;

	atomic_store(&c->tid, gettid());
	errgroup_go(c->g, wait_at_gate_then_return_arg, NULL);
	atomic_store(&c->returned, 1);
	pthread_testcancel();
	return NULL;
}

/*
 * A thread canceled while blocked in wait() finishes the call first, so
 * that the group is not left with its lock or its poller role held by a
 * thread that is gone: the next wait() used to hang.
 */
static void test_thread_canceled_in_wait_returns_from_it_first(void **state)
{
	struct cancel_target c = { 0 };
	errgroup *g = errgroup_new();
	pthread_t thread;
	void *exit_value;

	(void)state;
	assert_non_null(g);
	c.g = g;
	assert_int_equal(pipe2(gate, O_CLOEXEC), 0);
	assert_int_equal(errgroup_go(g, wait_at_gate_then_return_arg, NULL), 0);
	assert_int_equal(pthread_create(&thread, NULL, wait_then_honour_cancel, &c), 0);
	wait_until_blocked_in_library(&c.tid);

	assert_int_equal(pthread_cancel(thread), 0);
	gate_open_n(gate[1], 1);
	assert_int_equal(pthread_join(thread, &exit_value), 0);
	assert_ptr_equal(exit_value, PTHREAD_CANCELED);
	assert_int_equal(atomic_load(&c.returned), 1);
	assert_null(c.result);

	assert_null(errgroup_wait(g));
	assert_int_equal(errgroup_error_count(g), 0);
	errgroup_free(g);
	close(gate[0]);
	close(gate[1]);
	assert_true(no_children_left());
}

/* pthread_join, but giving up after WAIT_LIMIT_MS: a thread stuck on a
 * group the cancel broke fails the test instead of hanging it. */
static int join_within_limit(pthread_t thread, void **value)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += WAIT_LIMIT_MS / 1000;
	return pthread_timedjoin_np(thread, value, &until);
}

/* Whether errgroup_wait on g returns (no error) within WAIT_LIMIT_MS. */
static bool group_still_waits(errgroup *g)
{
	struct waiter w = { .g = g };
	pthread_t thread;

	assert_int_equal(pthread_create(&thread, NULL, wait_for_group, &w), 0);
	return join_within_limit(thread, NULL) == 0 && !w.result;
}

/*
 * The same in go() blocked at the limit: canceled there, it left the
 * poller role taken (as the poller, in epoll_wait), and the next wait()
 * slept for ever on a poller that was gone; or, asleep on the group's
 * condition variable while another thread polled, it took the group's
 * lock back and kept it, and every other call on the group hung.  Now the
 * request acts once there is room, before go() starts anything: go() does
 * not return, no index is used, and the group goes on.
 */
static void cancel_go_blocked_at_the_limit(bool behind_a_poller)
{
	struct cancel_target c = { 0 };
	struct waiter waiter = { 0 };
	errgroup *g = errgroup_new();
	pthread_t thread, waiting;
	void *exit_value;

	assert_non_null(g);
	c.g = g;
	waiter.g = g;
	assert_int_equal(pipe2(gate, O_CLOEXEC), 0);
	assert_int_equal(errgroup_set_limit(g, 1), 0);
	assert_int_equal(errgroup_go(g, wait_at_gate_then_return_arg, NULL), 0);
	if (behind_a_poller) {
		assert_int_equal(pthread_create(&waiting, NULL, wait_for_group, &waiter), 0);
		wait_until_blocked_in_library(&waiter.tid);
	}
	assert_int_equal(pthread_create(&thread, NULL, go_then_honour_cancel, &c), 0);
	wait_until_blocked_in_library(&c.tid);

	assert_int_equal(pthread_cancel(thread), 0);
	gate_open_n(gate[1], 1);
	assert_int_equal(join_within_limit(thread, &exit_value), 0);
	assert_ptr_equal(exit_value, PTHREAD_CANCELED);
	assert_int_equal(atomic_load(&c.returned), 0);
	if (behind_a_poller) {
		assert_int_equal(join_within_limit(waiting, NULL), 0);
		assert_null(waiter.result);
	}

	assert_true(group_still_waits(g));
	assert_int_equal(errgroup_error_count(g), 0);
	gate_open_n(gate[1], 1);
	assert_int_equal(errgroup_go(g, wait_at_gate_then_return_arg, NULL), 1);
	assert_null(errgroup_wait(g));
	errgroup_free(g);
	close(gate[0]);
	close(gate[1]);
	assert_true(no_children_left());
}

static void test_thread_canceled_in_go_at_the_limit_starts_nothing_and_leaves_the_group_whole(
	void **state)
{
	(void)state;
	cancel_go_blocked_at_the_limit(false);
}

static void test_thread_canceled_in_go_behind_a_poller_starts_nothing_and_leaves_the_group_whole(
	void **state)
{
	(void)state;
	cancel_go_blocked_at_the_limit(true);
}

/* Reports the task's cancel state: 0 if enabled, 1 if disabled. */
static int report_cancel_state(void *arg)
{
	int old;

	(void)arg;
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
	return old == PTHREAD_CANCEL_ENABLE ? 0 : 1;
}

/* go() turns cancellation off in a host with threads, which this one is;
 * the fork copies that state, but the task runs with the caller's. */
static void test_task_of_a_threaded_host_runs_with_the_callers_cancel_state(void **state)
{
	errgroup *g = errgroup_new();
	int old;

	(void)state;
	assert_non_null(g);
	assert_int_equal(errgroup_go(g, report_cancel_state, NULL), 0);
	assert_null(errgroup_wait(g));
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	assert_int_equal(errgroup_go(g, report_cancel_state, NULL), 1);
	pthread_setcancelstate(old, NULL);
	assert_non_null(errgroup_wait(g));
	assert_int_equal(errgroup_error_at(g, 0)->task, 1);
	errgroup_free(g);
}

/*
 * In a host with one thread, go() leaves the cancel state alone, since
 * writing it would cost a fault per task, and no other thread can cancel
 * this one.  Only the thread itself can have asked: that request acts
 * when go() begins, before it forks.  A fresh process, since this one has
 * had threads.  What it reports on stdout: "single" if it has one thread,
 * "fork" for a fork, "returned" if go() returned.  The runner does not
 * read __libc_single_threaded: a program that names it gets a copy of its
 * own, which pthread_cancel of oneself leaves set, while it clears
 * glibc's, which the library reads (found by session 17's hunt: the test
 * passed through the copy, and the request went into the task).
 */
#define SELF_CANCEL_RUNNER "--self-cancel-runner"

/* Not write(), which is a cancellation point: the fork handler would act
 * on the request itself. */
static void say(const char *what)
{
	if (syscall(SYS_write, STDOUT_FILENO, what, strlen(what)) < 0)
		_exit(4);
}

static void say_fork(void)
{
	say("fork\n");
}

static int noop(void *arg)
{
	(void)arg;
	return 0;
}

/* From /proc/self/status; 0 if it cannot tell. */
static int threads_in_this_process(void)
{
	char line[128];
	int n = 0;
	FILE *f = fopen("/proc/self/status", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "Threads: %d", &n) == 1)
			break;
	fclose(f);
	return n;
}

static int run_self_canceled_go(void)
{
	errgroup *g = errgroup_new();

	if (!g || pthread_atfork(say_fork, NULL, NULL) != 0)
		return 2;
	if (threads_in_this_process() == 1)
		say("single\n");
	pthread_cancel(pthread_self());
	errgroup_go(g, noop, NULL);
	say("returned\n");
	return 3;
}

static void test_own_cancel_request_acts_as_go_begins_in_a_host_with_one_thread(void **state)
{
	char exe[PATH_MAX], report[64];
	int out[2], status;
	size_t len = 0;
	ssize_t n;
	pid_t pid;

	(void)state;
	n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	assert_true(n > 0);
	exe[n] = '\0';
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* dup2 clears close-on-exec. */
		if (dup2(out[1], STDOUT_FILENO) < 0)
			_exit(126);
		execl(exe, exe, SELF_CANCEL_RUNNER, (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	do {
		n = read(out[0], report + len, sizeof report - 1 - len);
		if (n > 0)
			len += (size_t)n;
	} while ((n > 0 || (n < 0 && errno == EINTR)) && len < sizeof report - 1);
	report[len] = '\0';
	close(out[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	/* The canceled main thread was the last: the process exits 0. */
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_string_equal(report, "single\n");
}

/*
 * A thread of a threaded host with a cancel request pending calls go():
 * the request acts as the call begins, and no task starts.  go() turned
 * cancellation off instead, the fork copied the request into the task,
 * and it ended the task's only thread at its first cancellation point
 * (the send in errgroup_errorf): the process exited 0, and a task that
 * failed counted as a success.
 */
static atomic_int cancel_sent, go_returned;
static int *task_started;

static int count_and_fail(void *arg)
{
	(void)arg;
	__atomic_add_fetch(task_started, 1, __ATOMIC_SEQ_CST);
	return errgroup_errorf(5, "the task failed");
}

static void *go_once_canceled(void *arg)
{
	/* No cancellation point until go(). */
	while (!atomic_load(&cancel_sent))
		;
	errgroup_go(arg, count_and_fail, NULL);
	atomic_store(&go_returned, 1);
	return NULL;
}

static void test_pending_cancel_request_acts_as_go_begins(void **state)
{
	errgroup *g = errgroup_new();
	pthread_t worker;
	void *result;

	(void)state;
	assert_non_null(g);
	task_started = shared_alloc(sizeof *task_started);
	atomic_store(&cancel_sent, 0);
	atomic_store(&go_returned, 0);
	assert_int_equal(pthread_create(&worker, NULL, go_once_canceled, g), 0);
	assert_int_equal(pthread_cancel(worker), 0);
	atomic_store(&cancel_sent, 1);
	assert_int_equal(pthread_join(worker, &result), 0);
	assert_ptr_equal(result, PTHREAD_CANCELED);
	assert_int_equal(atomic_load(&go_returned), 0);
	assert_null(errgroup_wait(g));
	assert_int_equal(*task_started, 0);
	errgroup_free(g);
	shared_free(task_started, sizeof *task_started);
}

/* ---- cancel racing go() ---- */

struct canceler {
	errgroup *g;
	pthread_barrier_t *start;
	atomic_int *accepted;
	int cancel_after;              /* accepted tasks before it cancels */
};

static void *cancel_after(void *arg)
{
	struct canceler *c = arg;

	pthread_barrier_wait(c->start);
	while (atomic_load(c->accepted) < c->cancel_after)
		sched_yield();
	errgroup_cancel(c->g);
	return NULL;
}

/* What one round saw; the main thread asserts on it. */
static void check_round(errgroup *g, struct submitter *subs)
{
	static int index_to_id[TASKS];
	static int errors_per_id[TASKS];
	int accepted = 0;

	for (int i = 0; i < TASKS; i++)
		index_to_id[i] = -1;
	memset(errors_per_id, 0, sizeof errors_per_id);

	for (int t = 0; t < THREADS; t++) {
		bool canceled = false;

		for (int i = 0; i < TASKS_PER_THREAD; i++) {
			int id = t * TASKS_PER_THREAD + i, r = subs[t].result[i];

			if (r == -ECANCELED) {
				canceled = true;
				/* Nothing was started for it. */
				assert_int_equal(task_log->ran[id], 0);
				continue;
			}
			/* Cancellation is final. */
			assert_false(canceled);
			assert_in_range(r, 0, TASKS - 1);
			assert_int_equal(index_to_id[r], -1);
			index_to_id[r] = id;
			accepted++;
			assert_in_range(task_log->ran[id], 0, 1);
		}
	}
	/* Every accepted task, and only they, made a child. */
	assert_int_equal(task_log->forks, accepted);

	for (size_t i = 0; i < errgroup_error_count(g); i++) {
		const struct errgroup_error *e = errgroup_error_at(g, i);
		int id;

		assert_non_null(e);
		assert_in_range(e->task, 0, TASKS - 1);
		id = index_to_id[e->task];
		assert_true(id >= 0);
		errors_per_id[id]++;
		if (e->cause != ERRGROUP_CANCELED) {
			if (e->cause != ERRGROUP_RETURNED)
				print_error("task %d: cause %d code %d: %s\n", e->task, e->cause, e->code, e->message);
			/* Only the failing tasks fail on their own. */
			assert_int_equal(e->cause, ERRGROUP_RETURNED);
			assert_int_equal(e->code, 2);
			assert_int_equal(task_log->failing[id], 1);
		}
	}
	for (int index = 0; index < TASKS; index++) {
		int id = index_to_id[index];

		if (id < 0)
			continue;
		assert_in_range(errors_per_id[id], 0, 1);
		/* A task that failed, or was stopped before it could run, is
		 * exactly one error. */
		if (task_log->failing[id] || !task_log->ran[id])
			assert_int_equal(errors_per_id[id], 1);
	}
}

static void test_cancel_racing_go_from_threads_keeps_exact_accounting(void **state)
{
	static const int cancel_points[] = { 0, 1, 7, 40, 150, 390 };
	static struct submitter subs[THREADS];

	(void)state;
	for (size_t round = 0; round < sizeof cancel_points / sizeof cancel_points[0]; round++) {
		pthread_t threads[THREADS], cancel_thread;
		pthread_barrier_t start;
		atomic_int accepted = 0;
		struct canceler c;
		errgroup *g = errgroup_new();

		assert_non_null(g);
		task_log = shared_alloc(sizeof *task_log);
		assert_int_equal(errgroup_set_limit(g, 4), 0);
		assert_int_equal(pthread_barrier_init(&start, NULL, THREADS + 1), 0);
		c = (struct canceler){ .g = g, .start = &start, .accepted = &accepted,
				       .cancel_after = cancel_points[round] };
		assert_int_equal(pthread_create(&cancel_thread, NULL, cancel_after, &c), 0);
		for (int t = 0; t < THREADS; t++) {
			subs[t] = (struct submitter){ .g = g, .thread = t, .fn = record_and_return,
						      .start = &start, .accepted = &accepted };
			assert_int_equal(pthread_create(&threads[t], NULL, submit, &subs[t]), 0);
		}
		for (int t = 0; t < THREADS; t++)
			assert_int_equal(pthread_join(threads[t], NULL), 0);
		assert_int_equal(pthread_join(cancel_thread, NULL), 0);
		errgroup_wait(g);

		check_round(g, subs);
		assert_int_equal(errgroup_go(g, record_and_return, NULL), -ECANCELED);
		pthread_barrier_destroy(&start);
		errgroup_free(g);
		shared_free(task_log, sizeof *task_log);
		task_log = NULL;
		assert_true(no_children_left());
	}
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		census_test(test_go_from_four_threads_gives_unique_indices_and_runs_each_task_once),
		census_test(test_wait_from_two_threads_at_once_both_return_the_first_error),
		census_test(test_cancel_racing_go_from_threads_keeps_exact_accounting),
		census_test(test_thread_canceled_in_wait_returns_from_it_first),
		census_test(test_thread_canceled_in_go_at_the_limit_starts_nothing_and_leaves_the_group_whole),
		census_test(test_thread_canceled_in_go_behind_a_poller_starts_nothing_and_leaves_the_group_whole),
		census_test(test_task_of_a_threaded_host_runs_with_the_callers_cancel_state),
		census_test(test_own_cancel_request_acts_as_go_begins_in_a_host_with_one_thread),
		census_test(test_pending_cancel_request_acts_as_go_begins),
	};

	if (argc == 2 && strcmp(argv[1], SELF_CANCEL_RUNNER) == 0)
		return run_self_canceled_go();

	census_begin();
	return cmocka_run_group_tests(tests, setup_count_forks, NULL);
}
