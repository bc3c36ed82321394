/*
 * test_group.c - the group's core semantics: Go's own errgroup tests
 * ported (TestZeroGroup, TestTryGo, TestGoLimit, TestCancelCause), and how
 * each way a task can end becomes an error.
 */
#include "helpers.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>

static int succeed(void *arg)
{
	(void)arg;
	return 0;
}

/* arg is the code to fail with, 0 for success. */
static int fail_with(void *arg)
{
	int code = (int)(intptr_t)arg;

	return code ? errgroup_errorf(code, "task failed with %d", code) : 0;
}

/* TestZeroGroup: a new group works; wait returns the first error seen so
 * far, and a later error never replaces it, across reuse. */
static void test_zero_group_first_error_is_sticky(void **state)
{
	static const int cases[][3] = {
		{ 0 }, { 0, 0 }, { 5 }, { 5, 0 }, { 5, 0, 6 },
	};
	static const int lengths[] = { 0, 1, 1, 2, 3 };
	(void)state;

	for (size_t c = 0; c < sizeof lengths / sizeof *lengths; c++) {
		errgroup *g = errgroup_new();
		int first = 0;

		assert_non_null(g);
		for (int i = 0; i < lengths[c]; i++) {
			const struct errgroup_error *e;

			assert_true(errgroup_go(g, fail_with, (void *)(intptr_t)cases[c][i]) >= 0);
			e = errgroup_wait(g);
			if (!first)
				first = cases[c][i];
			if (!first) {
				assert_null(e);
				continue;
			}
			assert_non_null(e);
			assert_int_equal(e->cause, ERRGROUP_RETURNED);
			assert_int_equal(e->code, first);
			assert_ptr_equal(e, errgroup_error_at(g, 0));
		}
		errgroup_free(g);
	}
}

static void test_go_returns_indices_in_order_of_acceptance(void **state)
{
	errgroup *g = errgroup_new();
	(void)state;

	for (int i = 0; i < 5; i++)
		assert_int_equal(errgroup_go(g, succeed, NULL), i);
	assert_null(errgroup_wait(g));
	assert_int_equal(errgroup_try_go(g, succeed, NULL), 5);
	assert_null(errgroup_wait(g));
	errgroup_free(g);
}

/* Blocks until the test writes a byte to the pipe whose read end is arg. */
static int block_on_pipe(void *arg)
{
	return read_byte((int)(intptr_t)arg) < 0;
}

/* TestTryGo: at the limit try_go refuses with -EAGAIN, and succeeds again
 * once the tasks are done; the limit can change after wait. */
static void test_try_go_at_the_limit(void **state)
{
	enum { LIMIT = 8 };
	errgroup *g = errgroup_new();
	int p[2];
	(void)state;

	assert_int_equal(pipe(p), 0);
	assert_int_equal(errgroup_set_limit(g, LIMIT), 0);
	for (int i = 0; i < LIMIT; i++)
		assert_int_equal(errgroup_try_go(g, block_on_pipe, (void *)(intptr_t)p[0]), i);
	assert_int_equal(errgroup_try_go(g, succeed, NULL), -EAGAIN);
	assert_int_equal(errgroup_set_limit(g, 1), -EBUSY);
	gate_open_n(p[1], LIMIT);
	assert_null(errgroup_wait(g));

	assert_true(errgroup_try_go(g, succeed, NULL) >= 0);
	assert_null(errgroup_wait(g));
	assert_int_equal(errgroup_set_limit(g, 1), 0);
	assert_true(errgroup_try_go(g, block_on_pipe, (void *)(intptr_t)p[0]) >= 0);
	assert_int_equal(errgroup_try_go(g, succeed, NULL), -EAGAIN);
	gate_open_n(p[1], 1);
	assert_null(errgroup_wait(g));
	errgroup_free(g);
	close(p[0]);
	close(p[1]);
}

static void test_set_limit_zero_is_einval(void **state)
{
	errgroup *g = errgroup_new();
	(void)state;

	assert_int_equal(errgroup_set_limit(g, 0), -EINVAL);
	assert_int_equal(errgroup_set_limit(g, -1), 0);
	assert_int_equal(errgroup_set_limit(g, 3), 0);
	errgroup_free(g);
}

/* A task that has exited no longer runs, though nobody has reaped it yet
 * (a plain group reaps only inside its calls): the limit may be set, and
 * the task's result is kept. */
static void test_set_limit_after_the_task_exited_unreaped_succeeds(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();
	siginfo_t si;
	(void)state;

	assert_int_equal(errgroup_go(g, fail_with, (void *)5), 0);
	/* Until it has exited; WNOWAIT leaves it to the group. */
	memset(&si, 0, sizeof si);
	assert_int_equal(waitid(P_ALL, 0, &si, WEXITED | WNOWAIT), 0);

	assert_int_equal(errgroup_set_limit(g, 2), 0);
	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_RETURNED);
	assert_int_equal(e->code, 5);
	assert_int_equal(errgroup_error_count(g), 1);
	errgroup_free(g);
}

struct limit_counter {
	atomic_int active;
	atomic_int max_active;
	atomic_int ran;
};

static int count_active(void *arg)
{
	struct limit_counter *c = arg;
	int now = atomic_fetch_add(&c->active, 1) + 1;
	int max = atomic_load(&c->max_active);

	while (now > max && !atomic_compare_exchange_weak(&c->max_active, &max, now))
		;
	/* Stay a moment so that overlaps, if the limit allowed them, happen. */
	for (int i = 0; i < 3; i++)
		sched_yield();
	atomic_fetch_sub(&c->active, 1);
	atomic_fetch_add(&c->ran, 1);
	return 0;
}

/* TestGoLimit: go() blocks at the limit, so the limit is never exceeded,
 * as counted by the children themselves in shared memory. */
static void test_limit_is_never_exceeded(void **state)
{
	enum { LIMIT = 3, TASKS = 300 };
	struct limit_counter *c = shared_alloc(sizeof *c);
	errgroup *g = errgroup_new();
	(void)state;

	assert_int_equal(errgroup_set_limit(g, LIMIT), 0);
	for (int i = 0; i < TASKS; i++)
		assert_int_equal(errgroup_go(g, count_active, c), i);
	assert_null(errgroup_wait(g));
	assert_int_equal(atomic_load(&c->ran), TASKS);
	assert_true(atomic_load(&c->max_active) >= 1);
	assert_true(atomic_load(&c->max_active) <= LIMIT);
	errgroup_free(g);
	shared_free(c, sizeof *c);
}

/* TestCancelCause, without the context: started with try_go and no limit,
 * wait returns the failure, or NULL when every task succeeded. */
static void test_try_go_without_limit_reports_the_failure(void **state)
{
	errgroup *g = errgroup_new();
	const struct errgroup_error *e;
	(void)state;

	assert_int_equal(errgroup_set_cancel_on_error(g, true), 0);
	assert_true(errgroup_try_go(g, succeed, NULL) >= 0);
	assert_null(errgroup_wait(g));
	assert_true(errgroup_try_go(g, fail_with, (void *)(intptr_t)9) >= 0);
	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_RETURNED);
	assert_int_equal(e->code, 9);
	errgroup_free(g);
}

/* Runs one task alone and returns a copy of its error (cause 0: none). */
static struct errgroup_error run_one(errgroup_task *fn, void *arg, char *message, size_t size)
{
	struct errgroup_error copy = { 0 };
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();
	int index;

	assert_non_null(g);
	index = errgroup_go(g, fn, arg);
	assert_true(index >= 0);
	e = errgroup_wait(g);
	if (e) {
		copy = *e;
		assert_int_equal(e->task, index);
		assert_true(e->pid > 0);
		assert_non_null(e->message);
		if (message)
			snprintf(message, size, "%s", e->message);
		copy.message = NULL;
		assert_int_equal(errgroup_error_count(g), 1);
	}
	errgroup_free(g);
	return copy;
}

static void test_returned_code_keeps_all_its_bits(void **state)
{
	char msg[128];
	struct errgroup_error e;
	(void)state;

	e = run_one(fail_with, (void *)(intptr_t)1000, msg, sizeof msg);
	assert_int_equal(e.cause, ERRGROUP_RETURNED);
	assert_int_equal(e.code, 1000);
	assert_string_equal(msg, "task failed with 1000");

	/* 256 has no low bits: the exit status alone would say success. */
	e = run_one(fail_with, (void *)(intptr_t)256, NULL, 0);
	assert_int_equal(e.cause, ERRGROUP_RETURNED);
	assert_int_equal(e.code, 256);

	e = run_one(fail_with, (void *)(intptr_t)-7, NULL, 0);
	assert_int_equal(e.cause, ERRGROUP_RETURNED);
	assert_int_equal(e.code, -7);
}

static int return_without_message(void *arg)
{
	(void)arg;
	return 42;
}

static void test_returned_without_message_is_described(void **state)
{
	char msg[128];
	struct errgroup_error e = run_one(return_without_message, NULL, msg, sizeof msg);
	(void)state;

	assert_int_equal(e.cause, ERRGROUP_RETURNED);
	assert_int_equal(e.code, 42);
	assert_string_equal(msg, "returned 42");
}

static int exit_three(void *arg)
{
	(void)arg;
	_exit(3);
}

static void test_exit_is_exited_with_its_status(void **state)
{
	char msg[128];
	struct errgroup_error e = run_one(exit_three, NULL, msg, sizeof msg);
	(void)state;

	assert_int_equal(e.cause, ERRGROUP_EXITED);
	assert_int_equal(e.code, 3);
	assert_string_equal(msg, "exited with status 3");
}

static int exec_shell(void *arg)
{
	execl("/bin/sh", "sh", "-c", (const char *)arg, (char *)NULL);
	return 99;
}

static void test_exec_program_status_is_exited(void **state)
{
	struct errgroup_error e = run_one(exec_shell, "exit 7", NULL, 0);
	(void)state;

	assert_int_equal(e.cause, ERRGROUP_EXITED);
	assert_int_equal(e.code, 7);
	e = run_one(exec_shell, "echo a program that succeeds >/dev/null", NULL, 0);
	assert_int_equal(e.cause, 0);
}

static int segfault(void *arg)
{
	volatile int *p = arg;

	*p = 1;
	return 0;
}

static int call_abort(void *arg)
{
	(void)arg;
	abort();
}

/* A crash in the task is the task's error; the caller goes on. */
static void test_crash_is_isolated_and_signaled(void **state)
{
	char msg[128];
	struct errgroup_error e;
	(void)state;

	e = run_one(segfault, NULL, msg, sizeof msg);
	assert_int_equal(e.cause, ERRGROUP_SIGNALED);
	assert_int_equal(e.code, SIGSEGV);
	assert_non_null(strstr(msg, "killed by signal 11 (SIGSEGV)"));

	e = run_one(call_abort, NULL, msg, sizeof msg);
	assert_int_equal(e.cause, ERRGROUP_SIGNALED);
	assert_int_equal(e.code, SIGABRT);
	assert_non_null(strstr(msg, "SIGABRT"));
}

/* Why this system would not leave a core file in the task's directory,
 * or NULL if it would.  The pattern is read once: a dump piped to a
 * program (systemd-coredump, apport) or written elsewhere is not ours to
 * wait for or clean up. */
static const char *why_no_core_here(void)
{
	char pattern[256] = "";
	struct rlimit limit;
	FILE *f;

	if (under_valgrind())
		return "valgrind writes its own vgcore and ends the task without a kernel dump";
	f = fopen("/proc/sys/kernel/core_pattern", "re");
	if (!f)
		return "/proc/sys/kernel/core_pattern cannot be read";
	if (!fgets(pattern, sizeof pattern, f))
		pattern[0] = '\0';
	fclose(f);
	pattern[strcspn(pattern, "\n")] = '\0';
	if (pattern[0] == '|')
		return "core_pattern pipes dumps to a program";
	if (pattern[0] == '\0' || strchr(pattern, '/'))
		return "core_pattern does not write the dump in the task's directory";
	if (getrlimit(RLIMIT_CORE, &limit) < 0 ||
	    (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < 256u << 20))
		return "the hard RLIMIT_CORE is too low for a whole dump";
	if (prctl(PR_GET_DUMPABLE) != 1)
		return "this process is not dumpable";
	return NULL;
}

/* In a forked host, in dir with core dumps on: runs call_abort as a task
 * and exits 0 if its end says "core dumped" in the message and in the
 * status errgroup_reap gives, else the number of the first check that
 * failed. */
static _Noreturn void host_of_a_dumping_task(const char *dir)
{
	struct errgroup_exit end;
	const struct errgroup_error *e;
	struct rlimit limit;
	errgroup *g;

	if (getrlimit(RLIMIT_CORE, &limit) < 0)
		_exit(1);
	limit.rlim_cur = limit.rlim_max;
	if (setrlimit(RLIMIT_CORE, &limit) < 0 || chdir(dir) < 0)
		_exit(1);
	g = errgroup_new();
	if (!g || errgroup_fd(g) < 0 || errgroup_go(g, call_abort, NULL) != 0)
		_exit(2);
	e = errgroup_wait(g);
	if (!e || e->cause != ERRGROUP_SIGNALED || e->code != SIGABRT)
		_exit(3);
	if (!strstr(e->message, "killed by signal 6 (SIGABRT), core dumped"))
		_exit(4);
	if (errgroup_reap(g, &end) != 1 || end.error != e)
		_exit(5);
	if (!WIFSIGNALED(end.status) || WTERMSIG(end.status) != SIGABRT ||
	    !WCOREDUMP(end.status))
		_exit(6);
	errgroup_free(g);
	_exit(0);
}

/* X4: where the system dumps cores, a task's dump is reported as such.
 * The host raises its own limit in a child of the test, and the dump
 * lands in a directory of its own, never in the tree. */
static void test_core_dump_is_reported_in_the_message_and_the_status(void **state)
{
	char dir[] = "/tmp/errgroup-test-core-XXXXXX", path[PATH_MAX];
	const char *why = why_no_core_here();
	struct dirent *entry;
	int status, dumps = 0;
	pid_t host;
	DIR *d;

	(void)state;
	if (why) {
		print_message("no core dump here: %s\n", why);
		skip();
	}
	assert_non_null(mkdtemp(dir));
	host = fork();
	assert_true(host >= 0);
	if (host == 0)
		host_of_a_dumping_task(dir);
	assert_int_equal(waitpid(host, &status, 0), host);

	d = opendir(dir);
	assert_non_null(d);
	while ((entry = readdir(d))) {
		if (entry->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
		assert_int_equal(unlink(path), 0);
		dumps++;
	}
	closedir(d);
	assert_int_equal(rmdir(dir), 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(dumps, 1);
}

static int message_then_success(void *arg)
{
	(void)arg;
	printf("printed, and still a success\n");
	errgroup_errorf(5, "a message that does not matter");
	return 0;
}

static void test_exit_zero_is_success_whatever_it_sent(void **state)
{
	struct errgroup_error e = run_one(message_then_success, NULL, NULL, 0);
	(void)state;

	assert_int_equal(e.cause, 0);
}

/*
 * A task that succeeds is not asked for its messages (nothing needs them,
 * and reading for them would cost every task a system call), so they stay
 * on the channel for a while: they must never become another task's, here
 * the next one's in the same group, which fails without a message.
 */
static void test_message_of_a_task_that_succeeded_is_never_another_tasks(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	assert_int_equal(errgroup_set_limit(g, 1), 0);
	assert_int_equal(errgroup_go(g, message_then_success, NULL), 0);
	assert_int_equal(errgroup_go(g, exit_three, NULL), 1);
	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(e->task, 1);
	assert_string_equal(e->message, "exited with status 3");
	assert_int_equal(errgroup_error_count(g), 1);
	errgroup_free(g);
}

/* A message sent by another of the task's threads arrives as well: the
 * channel is the task's, not one thread's. */
static void *send_from_thread(void *arg)
{
	(void)arg;
	errgroup_errorf(5, "from a worker thread");
	return NULL;
}

static int message_from_another_thread(void *arg)
{
	pthread_t worker;

	(void)arg;
	if (pthread_create(&worker, NULL, send_from_thread, NULL) != 0)
		return 100;
	pthread_join(worker, NULL);
	return 5;
}

static void test_message_sent_by_another_thread_of_the_task_arrives(void **state)
{
	char msg[128];
	struct errgroup_error e = run_one(message_from_another_thread, NULL, msg, sizeof msg);
	(void)state;

	assert_int_equal(e.cause, ERRGROUP_RETURNED);
	assert_int_equal(e.code, 5);
	assert_string_equal(msg, "from a worker thread");
}

/*
 * A task finds the fds it sends through in a record of the library's
 * (child.c), which any of its threads reads, and which must stay the
 * task's whichever host thread forked it, and after the task started
 * tasks of its own, from its first thread or another: both the inner
 * task's message and the one the task sends afterwards from a worker
 * thread arrive.  The host alternates the thread that starts the task.
 * (Session 16 tried keeping the record on the forking thread's stack;
 * docs/benchmarks.md says why it was dropped.  These tests guard the
 * cases that design had to handle.)
 */
struct nesting {
	bool outer_from_thread;
	bool inner_from_thread;
};

static int inner_message(void *arg)
{
	(void)arg;
	return errgroup_errorf(3, "from the inner task");
}

/* 0, or which check failed (100 and up). */
static int run_inner_group(void)
{
	const struct errgroup_error *e;
	errgroup *inner = errgroup_new();
	int r;

	if (!inner)
		return 100;
	r = errgroup_go(inner, inner_message, NULL) == 0 ? 0 : 101;
	e = errgroup_wait(inner);
	if (r == 0)
		r = !e ? 102 : e->code != 3 ? 103 :
		    strcmp(e->message, "from the inner task") != 0 ? 104 : 0;
	errgroup_free(inner);
	return r;
}

static void *run_inner_group_in_thread(void *result)
{
	*(int *)result = run_inner_group();
	return NULL;
}

static int inner_group_then_message_from_a_thread(void *arg)
{
	const struct nesting *n = arg;
	pthread_t thread;
	int r = 105;

	if (!n->inner_from_thread)
		r = run_inner_group();
	else if (pthread_create(&thread, NULL, run_inner_group_in_thread, &r) == 0)
		pthread_join(thread, NULL);
	return r ? r : message_from_another_thread(NULL);
}

struct start {
	errgroup *g;
	struct nesting *n;
	int index;
};

static void *start_in_thread(void *arg)
{
	struct start *s = arg;

	s->index = errgroup_go(s->g, inner_group_then_message_from_a_thread, s->n);
	return NULL;
}

static void test_message_arrives_whichever_thread_started_the_task_and_its_own_tasks(void **state)
{
	struct nesting ways[] = { { false, false }, { true, false }, { false, true },
				  { true, true }, { false, false } };
	(void)state;

	for (size_t i = 0; i < sizeof ways / sizeof ways[0]; i++) {
		struct start s = { errgroup_new(), &ways[i], -1 };
		const struct errgroup_error *e;
		pthread_t thread;

		assert_non_null(s.g);
		if (ways[i].outer_from_thread) {
			assert_int_equal(pthread_create(&thread, NULL, start_in_thread, &s), 0);
			assert_int_equal(pthread_join(thread, NULL), 0);
		} else {
			start_in_thread(&s);
		}
		assert_int_equal(s.index, 0);
		e = errgroup_wait(s.g);
		assert_non_null(e);
		if (e->code != 5)
			print_error("way %zu: %s (code %d)\n", i, e->message, e->code);
		assert_int_equal(e->cause, ERRGROUP_RETURNED);
		assert_int_equal(e->code, 5);
		assert_string_equal(e->message, "from a worker thread");
		errgroup_free(s.g);
	}
}

/*
 * Nothing the library keeps may lead the host into memory it unmapped: a
 * thread's stack goes when the thread ends.  A host thread on a stack of
 * the test's own starts a task and ends; the stack is unmapped.  Then the
 * host's next fork, a plain fork of its own, and an errgroup_errorf in
 * the host (which is no task) must all still work.
 */
#define OWN_STACK_SIZE ((size_t)2 << 20)   /* TSan wants 900 KiB */

static void test_task_started_from_a_thread_whose_stack_is_gone_leaves_nothing_dangling(void **state)
{
	struct nesting way = { false, false };
	struct start s = { errgroup_new(), &way, -1 };
	const struct errgroup_error *e;
	pthread_attr_t attr;
	pthread_t thread;
	void *stack;
	int status;
	pid_t pid;

	(void)state;
	assert_non_null(s.g);
	stack = mmap(NULL, OWN_STACK_SIZE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	assert_true(stack != MAP_FAILED);
	assert_int_equal(pthread_attr_init(&attr), 0);
	assert_int_equal(pthread_attr_setstack(&attr, stack, OWN_STACK_SIZE), 0);
	assert_int_equal(pthread_create(&thread, &attr, start_in_thread, &s), 0);
	assert_int_equal(pthread_join(thread, NULL), 0);
	pthread_attr_destroy(&attr);
	assert_int_equal(munmap(stack, OWN_STACK_SIZE), 0);
	assert_int_equal(s.index, 0);

	assert_int_equal(errgroup_go(s.g, inner_group_then_message_from_a_thread, &way), 1);
	pid = fork();
	if (pid == 0)
		_exit(errgroup_errorf(0, "not a task") == 0 ? 0 : 1);
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(errgroup_errorf(9, "in the host"), 9);
	e = errgroup_wait(s.g);
	assert_non_null(e);
	assert_int_equal(errgroup_error_count(s.g), 2);
	for (size_t i = 0; i < 2; i++) {
		e = errgroup_error_at(s.g, i);
		assert_int_equal(e->code, 5);
		assert_string_equal(e->message, "from a worker thread");
	}
	errgroup_free(s.g);
}

/*
 * In a task forked from a host thread, the task's first thread runs on a
 * stack glibc allocated, which goes when that thread ends: to glibc's
 * cache first, and out of the address space once the cache is over its
 * 40 MiB.  A worker waits for the first thread's end, has one 48 MiB
 * thread come and go to push its stack out, and then sends its message,
 * which must arrive: the task's record may not be on that stack.
 */
#define CACHE_FLUSHING_STACK ((size_t)48 << 20)

static void *nothing(void *arg)
{
	return arg;
}

static void *message_after_the_first_thread_is_gone(void *first)
{
	pthread_attr_t attr;
	pthread_t big;

	if (pthread_join(*(pthread_t *)first, NULL) != 0 || pthread_attr_init(&attr) != 0 ||
	    pthread_attr_setstacksize(&attr, CACHE_FLUSHING_STACK) != 0 ||
	    pthread_create(&big, &attr, nothing, NULL) != 0 || pthread_join(big, NULL) != 0)
		_exit(100);
	errgroup_errorf(6, "after the first thread ended");
	_exit(6);
}

static int first_thread_ends(void *arg)
{
	static pthread_t first, worker;

	(void)arg;
	first = pthread_self();
	if (pthread_create(&worker, NULL, message_after_the_first_thread_is_gone, &first) != 0)
		return 101;
	pthread_exit(NULL);
}

static void *start_first_thread_ends(void *arg)
{
	struct start *s = arg;

	s->index = errgroup_go(s->g, first_thread_ends, NULL);
	return NULL;
}

/* TSan loses track of a thread that joins the first thread of a process
 * forked from a threaded one ("CHECK failed: tid < kMaxTid"). */
static void test_message_arrives_after_the_first_thread_of_a_task_started_by_a_thread_ended(void **state)
{
	struct start s = { errgroup_new(), NULL, -1 };
	const struct errgroup_error *e;
	pthread_t thread;

	(void)state;
	if (under_tsan())
		skip();
	assert_non_null(s.g);
	assert_int_equal(pthread_create(&thread, NULL, start_first_thread_ends, &s), 0);
	assert_int_equal(pthread_join(thread, NULL), 0);
	assert_int_equal(s.index, 0);
	e = errgroup_wait(s.g);
	assert_non_null(e);
	if (e->code != 6)
		print_error("%s (code %d)\n", e->message, e->code);
	assert_int_equal(e->cause, ERRGROUP_EXITED);
	assert_int_equal(e->code, 6);
	assert_string_equal(e->message, "after the first thread ended");
	errgroup_free(s.g);
}

/*
 * A task whose first thread ends with pthread_exit() while a worker goes
 * on: glibc unwinds that thread to the frame that called main and runs
 * its thread-specific destructors there, over whatever the task's start
 * left on that stack.  The worker's message must still arrive, and a
 * child it forks must still hold neither the channel nor the lifeline.
 * (From the review of session 16's record on the stack, which failed it.)
 */
static pthread_key_t first_thread_key;
static pthread_t first_thread;

/* A destructor that uses its stack, as any may: it reads 16 KiB into a
 * buffer there (zeroes, from /dev/zero). */
static void use_the_stack(void *unused)
{
	char buf[16384];
	int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);

	(void)unused;
	if (fd >= 0 && read(fd, buf, sizeof buf) > 0)
		__asm__ volatile("" : : "r"(buf) : "memory");
	close(fd);
}

static bool holds_a_task_fd(void)
{
	for (int fd = 3; fd < 1024; fd++) {
		socklen_t len = sizeof(int);
		int type;

		if (fcntl(fd, F_GETSIG) == SIGKILL)
			return true;
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_SEQPACKET)
			return true;
	}
	return false;
}

static void *carry_on_after_the_first_thread(void *arg)
{
	int status;
	pid_t pid;

	(void)arg;
	pthread_join(first_thread, NULL);
	pid = fork();
	if (pid == 0)
		_exit(holds_a_task_fd() ? 1 : 0);
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		_exit(100);
	errgroup_errorf(6, "worker: child %s", status == 0 ? "clean" : "holds a task fd");
	_exit(status == 0 ? 6 : 7);
}

static int first_thread_exits(void *arg)
{
	pthread_t worker;

	(void)arg;
	first_thread = pthread_self();
	if (pthread_key_create(&first_thread_key, use_the_stack) != 0 ||
	    pthread_setspecific(first_thread_key, &first_thread_key) != 0 ||
	    pthread_create(&worker, NULL, carry_on_after_the_first_thread, NULL) != 0)
		return 101;
	pthread_exit(NULL);
}

/* Not under TSan, as above. */
static void test_message_arrives_after_the_task_first_thread_exits(void **state)
{
	char msg[128];
	struct errgroup_error e;

	(void)state;
	if (under_tsan())
		skip();
	e = run_one(first_thread_exits, NULL, msg, sizeof msg);

	assert_int_equal(e.cause, ERRGROUP_EXITED);
	assert_int_equal(e.code, 6);
	assert_string_equal(msg, "worker: child clean");
}

static int message_then_crash(void *arg)
{
	(void)arg;
	errgroup_errorf(1, "about to crash");
	raise(SIGSEGV);
	return 0;
}

static void test_message_survives_a_crash(void **state)
{
	char msg[128];
	struct errgroup_error e = run_one(message_then_crash, NULL, msg, sizeof msg);
	(void)state;

	assert_int_equal(e.cause, ERRGROUP_SIGNALED);
	assert_int_equal(e.code, SIGSEGV);
	assert_string_equal(msg, "about to crash");
}

static int two_messages(void *arg)
{
	(void)arg;
	errgroup_errorf(1, "first");
	return errgroup_errorf(2, "second");
}

static void test_last_message_wins(void **state)
{
	char msg[128];
	struct errgroup_error e = run_one(two_messages, NULL, msg, sizeof msg);
	(void)state;

	assert_int_equal(e.code, 2);
	assert_string_equal(msg, "second");
}

/* The letter at position i of a long message. */
static char letter(size_t i)
{
	return (char)('a' + (i * 7 + i / 26) % 26);
}

static int long_message(void *arg)
{
	size_t len = (size_t)(intptr_t)arg;
	char *text = malloc(len + 1);

	if (!text)
		return 100;
	for (size_t i = 0; i < len; i++)
		text[i] = letter(i);
	text[len] = '\0';
	return errgroup_errorf(1, "%s", text);
}

static char *long_message_of(size_t len)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();
	char *copy;

	assert_true(errgroup_go(g, long_message, (void *)(intptr_t)len) >= 0);
	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(e->code, 1);
	copy = strdup(e->message);
	errgroup_free(g);
	return copy;
}

/* 64 KiB is more than a pipe holds: it arrives intact only if the parent
 * reads while the child runs. */
static void test_message_of_64_kib_arrives_intact(void **state)
{
	char *m = long_message_of(ERRGROUP_MESSAGE_MAX);
	(void)state;

	assert_int_equal(strlen(m), ERRGROUP_MESSAGE_MAX);
	for (size_t i = 0; i < ERRGROUP_MESSAGE_MAX; i++)
		if (m[i] != letter(i))
			fail_msg("byte %zu differs", i);
	free(m);
}

static void test_longer_message_is_cut_with_a_marker(void **state)
{
	char *m = long_message_of(100000);
	(void)state;

	assert_true(strlen(m) > ERRGROUP_MESSAGE_MAX);
	for (size_t i = 0; i < ERRGROUP_MESSAGE_MAX; i++)
		if (m[i] != letter(i))
			fail_msg("byte %zu differs", i);
	assert_string_equal(m + ERRGROUP_MESSAGE_MAX, "[... message truncated: 100000 bytes]");
	free(m);
}

static void test_errorf_outside_a_task_only_returns_the_code(void **state)
{
	(void)state;
	assert_int_equal(errgroup_errorf(17, "not in a task"), 17);
}

static void test_go_without_a_function_is_einval(void **state)
{
	errgroup *g = errgroup_new();
	(void)state;

	assert_int_equal(errgroup_go(g, NULL, NULL), -EINVAL);
	assert_int_equal(errgroup_try_go(g, NULL, NULL), -EINVAL);
	errgroup_free(g);
}

struct grandchild {
	int release_fd;       /* the grandchild blocks reading this */
	atomic_int pid;
};

/* The task leaves a grandchild that holds every fd the task had, the
 * library's included (raw fork: no atfork handler closes them), and
 * returns at once. */
static int leave_grandchild(void *arg)
{
	struct grandchild *gc = arg;
	pid_t pid = (pid_t)syscall(SYS_fork);

	if (pid == 0) {
		read_byte(gc->release_fd);
		_exit(0);
	}
	atomic_store(&gc->pid, pid);
	return pid < 0;
}

/* Completion is the child's exit, never the end of file on a channel. */
static void test_grandchild_holding_the_channel_does_not_delay_wait(void **state)
{
	struct grandchild *gc = shared_alloc(sizeof *gc);
	errgroup *g = errgroup_new();
	int p[2];
	(void)state;

	assert_int_equal(pipe(p), 0);
	gc->release_fd = p[0];
	assert_true(errgroup_go(g, leave_grandchild, gc) >= 0);
	assert_null(errgroup_wait(g));   /* returns while the grandchild lives */
	assert_true(atomic_load(&gc->pid) > 0);
	assert_int_equal(kill(atomic_load(&gc->pid), 0), 0);
	gate_open_n(p[1], 1);
	errgroup_free(g);
	close(p[0]);
	close(p[1]);
	shared_free(gc, sizeof *gc);
}

/* Error pointers stay valid while the group records more errors. */
static void test_error_pointers_stay_valid(void **state)
{
	const struct errgroup_error *first;
	errgroup *g = errgroup_new();
	(void)state;

	assert_true(errgroup_go(g, fail_with, (void *)(intptr_t)1) >= 0);
	first = errgroup_wait(g);
	assert_non_null(first);
	for (int i = 0; i < 40; i++)
		assert_true(errgroup_go(g, fail_with, (void *)(intptr_t)(i + 2)) >= 0);
	assert_ptr_equal(errgroup_wait(g), first);
	assert_int_equal(errgroup_error_count(g), 41);
	assert_int_equal(first->code, 1);
	assert_string_equal(first->message, "task failed with 1");
	assert_null(errgroup_error_at(g, 41));
	errgroup_free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		census_test(test_zero_group_first_error_is_sticky),
		census_test(test_go_returns_indices_in_order_of_acceptance),
		census_test(test_try_go_at_the_limit),
		census_test(test_set_limit_zero_is_einval),
		census_test(test_set_limit_after_the_task_exited_unreaped_succeeds),
		census_test(test_limit_is_never_exceeded),
		census_test(test_try_go_without_limit_reports_the_failure),
		census_test(test_returned_code_keeps_all_its_bits),
		census_test(test_returned_without_message_is_described),
		census_test(test_exit_is_exited_with_its_status),
		census_test(test_exec_program_status_is_exited),
		census_test(test_crash_is_isolated_and_signaled),
		census_test(test_core_dump_is_reported_in_the_message_and_the_status),
		census_test(test_exit_zero_is_success_whatever_it_sent),
		census_test(test_message_of_a_task_that_succeeded_is_never_another_tasks),
		census_test(test_message_sent_by_another_thread_of_the_task_arrives),
		census_test(test_message_arrives_whichever_thread_started_the_task_and_its_own_tasks),
		census_test(test_task_started_from_a_thread_whose_stack_is_gone_leaves_nothing_dangling),
		census_test(test_message_arrives_after_the_first_thread_of_a_task_started_by_a_thread_ended),
		census_test(test_message_arrives_after_the_task_first_thread_exits),
		census_test(test_message_survives_a_crash),
		census_test(test_last_message_wins),
		census_test(test_message_of_64_kib_arrives_intact),
		census_test(test_longer_message_is_cut_with_a_marker),
		census_test(test_errorf_outside_a_task_only_returns_the_code),
		census_test(test_go_without_a_function_is_einval),
		census_test(test_grandchild_holding_the_channel_does_not_delay_wait),
		census_test(test_error_pointers_stay_valid),
	};

	census_begin();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
