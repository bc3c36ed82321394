/*
 * test_orphans.c - tasks die with the process that started them, however
 * it dies, and only then: not when the thread that called errgroup_go
 * exits (the PR_SET_PDEATHSIG trap); and a host that dies before its
 * child armed the lifeline leaves no task running either.
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

/* ---- the host dies before its task armed the lifeline ---- */

enum { OUTLIVED_HOST = 42, DIED_AT_ARMING = 127 };

/* Under valgrind the host is so slow after the fork that its child has
 * nearly always armed first (291 to 300 of 300 here): a few hundred rounds
 * there would cost seconds and add little. */
static int host_deaths(void)
{
	return under_valgrind() ? 20 : 300;
}

/* The read end of the release pipe, whose write end only the test holds. */
static int release_fd = -1;

/*
 * The task: says whether it outlived its host.  The test closes the
 * release pipe only once it has reaped the host, and the kernel closes a
 * dying process's fds, so sends the lifeline's SIGKILL, before the
 * process can be reaped: a task that had armed by then cannot return from
 * read.  Only one the lifeline missed gets the end of file.
 */
static int report_outliving_the_host(void *arg)
{
	ssize_t n;
	char c;
	(void)arg;

	do
		n = read(release_fd, &c, 1);
	while (n < 0 && errno == EINTR);
	return OUTLIVED_HOST;
}

/* The host: starts one task and dies at once, while the child may still be
 * on its way to lifeline_arm. */
static _Noreturn void host_killing_itself_after_go(int release_write_end)
{
	errgroup *g;

	close(release_write_end);
	g = errgroup_new();
	if (!g || errgroup_go(g, report_outliving_the_host, NULL) < 0)
		_exit(1);
	kill(getpid(), SIGKILL);
	_exit(1);
}

struct orphan_fates {
	int killed;                 /* armed in time: the lifeline's SIGKILL */
	int died_at_arming;         /* found the host gone when it armed */
	int outlived;               /* the lifeline missed it */
	int other;
	int hosts_not_killed;
};

/* One host; every orphan is collected, since a subreaper adopts them
 * before the host can be reaped. */
static void kill_host_after_go(struct orphan_fates *fates)
{
	int release[2], status;
	pid_t host_pid, pid;

	assert_int_equal(pipe2(release, O_CLOEXEC), 0);
	release_fd = release[0];
	host_pid = fork();
	assert_true(host_pid >= 0);
	if (host_pid == 0)
		host_killing_itself_after_go(release[1]);
	assert_int_equal(waitpid(host_pid, &status, 0), host_pid);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		fates->hosts_not_killed++;
	close(release[1]);
	while ((pid = waitpid(-1, &status, 0)) > 0) {
		if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
			fates->killed++;
		else if (WIFEXITED(status) && WEXITSTATUS(status) == DIED_AT_ARMING)
			fates->died_at_arming++;
		else if (WIFEXITED(status) && WEXITSTATUS(status) == OUTLIVED_HOST)
			fates->outlived++;
		else
			fates->other++;
	}
	assert_int_equal(errno, ECHILD);
	close(release[0]);
}

/*
 * errgroup_go returns once the child is forked and its gate opened, not
 * once it has armed its lifeline; a host that dies then closes the
 * lifeline before anyone listens for it, and the kernel sends nothing.
 * The child must then see, when it arms, that the writer is gone, and
 * exit without running the task.  Which side wins is the scheduler's
 * choice, so the race is run many times; each task must end one of the
 * two right ways, and none may run on.
 */
static void test_task_whose_host_dies_right_after_go_never_outlives_it(void **state)
{
	struct orphan_fates fates = { 0 };
	int rounds = host_deaths(), fds = open_fd_count();
	(void)state;

	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	for (int i = 0; i < rounds; i++)
		kill_host_after_go(&fates);
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
	print_message("%d tasks killed by the lifeline, %d found the host gone at arming, "
		      "%d outlived it\n", fates.killed, fates.died_at_arming, fates.outlived);
	assert_int_equal(fates.hosts_not_killed, 0);
	assert_int_equal(fates.outlived, 0);
	assert_int_equal(fates.other, 0);
	assert_int_equal(fates.killed + fates.died_at_arming, rounds);
	assert_true(no_children_left());
	assert_int_equal(open_fd_count(), fds);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		census_test(test_tasks_and_grandchildren_die_when_the_host_is_killed),
		census_test(test_exec_d_tasks_die_when_the_host_is_killed),
		census_test(test_tasks_outlive_the_thread_that_started_them),
		census_test(test_task_whose_host_dies_right_after_go_never_outlives_it),
	};

	census_begin();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
