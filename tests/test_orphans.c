/*
 * test_orphans.c - tasks die with the process that started them, however
 * it dies, and only then: not when the thread that called errgroup_go
 * exits (the PR_SET_PDEATHSIG trap).
 */
#include "helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/prctl.h>

enum { TASKS = 2 };

struct census {
	atomic_int task_pid[TASKS];
	atomic_int grandchild_pid[TASKS];
};

static struct census *census;
static int ready_fd;

/* Leaves a grandchild in the task's process group, reports both pids,
 * says it is ready (a byte on ready_fd), and blocks for good. */
static int task_with_grandchild(void *arg)
{
	int slot = (int)(intptr_t)arg;
	pid_t grandchild = fork();

	if (grandchild == 0) {
		for (;;)
			pause();
	}
	atomic_store(&census->task_pid[slot], getpid());
	atomic_store(&census->grandchild_pid[slot], grandchild);
	(void)!write(ready_fd, "r", 1);
	for (;;)
		pause();
	return 0;
}

/* As above, but the task then execs a program: the lifeline survives. */
static int task_with_grandchild_then_exec(void *arg)
{
	int slot = (int)(intptr_t)arg;
	pid_t grandchild = fork();

	if (grandchild == 0) {
		for (;;)
			pause();
	}
	char script[64];

	atomic_store(&census->task_pid[slot], getpid());
	atomic_store(&census->grandchild_pid[slot], grandchild);
	/* The exec'd program says it runs, so the host dies after the exec. */
	snprintf(script, sizeof script, "printf r >&%d; exec sleep 1000000", ready_fd);
	execl("/bin/sh", "sh", "-c", script, (char *)NULL);
	return 1;
}

static errgroup_task *host_task;

/* The host: starts the tasks, then waits to be killed. */
static _Noreturn void host(void)
{
	errgroup *g = errgroup_new();

	for (int i = 0; i < TASKS; i++)
		if (errgroup_go(g, host_task, (void *)(intptr_t)i) < 0)
			_exit(1);
	for (;;)
		pause();
}

/* The test process adopts the orphans (a subreaper), so it can wait for
 * each of them and see what killed it. */
static void kill_host_and_expect_orphans_killed(errgroup_task *task)
{
	int p[2], status;
	pid_t host_pid;

	host_task = task;
	census = shared_alloc(sizeof *census);
	assert_int_equal(pipe(p), 0);
	ready_fd = p[1];
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	host_pid = fork();
	assert_true(host_pid >= 0);
	if (host_pid == 0)
		host();
	for (int i = 0; i < TASKS; i++)
		assert_int_equal(read_byte(p[0]), 'r');

	assert_int_equal(kill(host_pid, SIGKILL), 0);
	assert_int_equal(waitpid(host_pid, &status, 0), host_pid);
	for (int i = 0; i < TASKS; i++) {
		pid_t pids[2] = { atomic_load(&census->task_pid[i]),
				  atomic_load(&census->grandchild_pid[i]) };

		for (int k = 0; k < 2; k++) {
			assert_true(pids[k] > 0);
			/* Blocks until the lifeline fired; a hang here is the
			 * failure, caught by the runner's timeout. */
			assert_int_equal(waitpid(pids[k], &status, 0), pids[k]);
			assert_true(WIFSIGNALED(status));
			assert_int_equal(WTERMSIG(status), SIGKILL);
		}
	}
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
	assert_true(no_children_left());
	close(p[0]);
	close(p[1]);
	shared_free(census, sizeof *census);
}

static void test_tasks_and_grandchildren_die_when_the_host_is_killed(void **state)
{
	(void)state;
	kill_host_and_expect_orphans_killed(task_with_grandchild);
}

static void test_exec_d_tasks_die_when_the_host_is_killed(void **state)
{
	(void)state;
	kill_host_and_expect_orphans_killed(task_with_grandchild_then_exec);
}

static int block_on_pipe(void *arg)
{
	return read_byte((int)(intptr_t)arg) == 'x' ? 0 : 1;
}

struct starter {
	errgroup *g;
	int fd;
	int index;
};

static void *start_then_exit(void *arg)
{
	struct starter *s = arg;

	s->index = errgroup_go(s->g, block_on_pipe, (void *)(intptr_t)s->fd);
	return NULL;
}

static void test_tasks_outlive_the_thread_that_started_them(void **state)
{
	struct starter s = { .g = errgroup_new() };
	pthread_t thread;
	int p[2];
	(void)state;

	assert_int_equal(pipe(p), 0);
	s.fd = p[0];
	assert_int_equal(pthread_create(&thread, NULL, start_then_exit, &s), 0);
	assert_int_equal(pthread_join(thread, NULL), 0);   /* the thread is gone */
	assert_int_equal(s.index, 0);
	gate_open_n(p[1], 1);
	/* With PR_SET_PDEATHSIG the task would have died with the thread. */
	assert_null(errgroup_wait(s.g));
	errgroup_free(s.g);
	close(p[0]);
	close(p[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tasks_and_grandchildren_die_when_the_host_is_killed),
		cmocka_unit_test(test_exec_d_tasks_die_when_the_host_is_killed),
		cmocka_unit_test(test_tasks_outlive_the_thread_that_started_them),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
