/*
 * test_exit_status.c - the status of a task the kernel reaped itself is
 * waited for, not reported lost.
 *
 * A host that ignores SIGCHLD makes the kernel reap each task.  Since
 * Linux 6.15 the kernel keeps the status for pidfds (PIDFD_INFO_EXIT),
 * but it records it in release_task(), a moment after exit_notify() woke
 * the pidfd's pollers: a poller on the other CPU that asks in between
 * finds the process still attached and no status.  The library then asks
 * again at its sweeps (reap.c); it once called such a status lost, and
 * test_hygiene saw that about once in a few hundred runs.
 *
 * The window is microseconds wide and nothing in user space holds it
 * open, so this binary opens it: it is linked with -Wl,--wrap=ioctl (the
 * Makefile), and the wrapper answers the library's PIDFD_GET_INFO as the
 * kernel does inside the window, for as many asks per pidfd as a test
 * says.  Only the parent's calls go through it: a child makes raw system
 * calls.
 */
#include "helpers.h"

#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/pidfd.h>

#include "internal.h"   /* pidfd_supported */

/* The kernel's ABI (<linux/pidfd.h>, newer than the installed headers):
 * PIDFD_GET_INFO is ioctl 11 of type 0xFF; the struct starts with the
 * mask, and its first 64-byte version ends with the wait status. */
#define PIDFD_IOCTL_TYPE 0xFF
#define PIDFD_GET_INFO_NR 11
#define PIDFD_INFO_EXIT_BIT (1ULL << 3)
#define PIDFD_INFO_SIZE_VER0 64
#define PIDFD_INFO_EXIT_CODE_OFFSET 60

#define MAX_FDS 1024
#define HIDE_FOREVER INT32_MAX

enum answer { ANSWER_NOT_YET, ANSWER_GONE };

static enum answer hidden_answer;
static atomic_int hidden_asks;           /* per pidfd, from its first */
static atomic_int asks_by_fd[MAX_FDS];   /* PIDFD_GET_INFO calls so far */
static int hidden_ask_seen[2] = { -1, -1 };   /* a byte per hidden ask, if open */

int __real_ioctl(int fd, unsigned long request, ...);
int __wrap_ioctl(int fd, unsigned long request, ...);

static bool is_get_info(unsigned long request)
{
	return _IOC_TYPE(request) == PIDFD_IOCTL_TYPE && _IOC_NR(request) == PIDFD_GET_INFO_NR;
}

int __wrap_ioctl(int fd, unsigned long request, ...)
{
	uint64_t *mask;
	va_list ap;
	void *arg;
	int asked;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (!is_get_info(request) || fd < 0 || fd >= MAX_FDS)
		return __real_ioctl(fd, request, arg);
	asked = atomic_fetch_add(&asks_by_fd[fd], 1);
	if (asked >= atomic_load(&hidden_asks))
		return __real_ioctl(fd, request, arg);
	if (hidden_ask_seen[1] >= 0 && write(hidden_ask_seen[1], "", 1) < 0)
		return -1;
	if (hidden_answer == ANSWER_GONE) {
		/* Released, on a kernel that keeps no status (6.13, 6.14). */
		errno = ESRCH;
		return -1;
	}
	/* Dead and still attached: the kernel answers, without the status. */
	if (__real_ioctl(fd, request, arg) < 0)
		return -1;
	mask = arg;
	*mask &= ~PIDFD_INFO_EXIT_BIT;
	return 0;
}

static void hide_status(enum answer answer, int asks)
{
	hidden_answer = answer;
	atomic_store(&hidden_asks, asks);
	for (int fd = 0; fd < MAX_FDS; fd++)
		atomic_store(&asks_by_fd[fd], 0);
}

/* How many pidfds were asked exactly n times. */
static int fds_asked(int n)
{
	int count = 0;

	for (int fd = 0; fd < MAX_FDS; fd++)
		if (atomic_load(&asks_by_fd[fd]) == n)
			count++;
	return count;
}

static int fds_asked_at_all(void)
{
	int count = 0;

	for (int fd = 0; fd < MAX_FDS; fd++)
		if (atomic_load(&asks_by_fd[fd]) > 0)
			count++;
	return count;
}

/* Whether the kernel keeps a reaped child's status for its pidfd: a
 * child of our own, reaped through the pidfd, then asked about. */
static bool kernel_keeps_reaped_status(void)
{
	unsigned char info[PIDFD_INFO_SIZE_VER0];
	uint64_t mask = PIDFD_INFO_EXIT_BIT;
	int32_t wstatus;
	siginfo_t si;
	pid_t pid;
	int fd;
	bool kept;

	if (!pidfd_supported())
		return false;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(5);
	fd = pidfd_open(pid, 0);
	assert_true(fd >= 0);
	assert_int_equal(waitid(P_PIDFD, (id_t)fd, &si, WEXITED), 0);
	memset(info, 0, sizeof info);
	memcpy(info, &mask, sizeof mask);
	kept = __real_ioctl(fd, _IOWR(PIDFD_IOCTL_TYPE, PIDFD_GET_INFO_NR,
				      unsigned char[PIDFD_INFO_SIZE_VER0]), info) == 0;
	memcpy(&mask, info, sizeof mask);
	memcpy(&wstatus, info + PIDFD_INFO_EXIT_CODE_OFFSET, sizeof wstatus);
	close(fd);
	return kept && (mask & PIDFD_INFO_EXIT_BIT) && WIFEXITED(wstatus) &&
	       WEXITSTATUS(wstatus) == 5;
}

/* ---- tasks ---- */

enum end_kind { END_EXITS_3, END_SUCCEEDS, END_KILLED_BY_SIGTERM, END_KINDS };

static int go_signal[2];   /* write end closed once every task started */

/* Waits until every task has started, so that no pidfd number is reused
 * within a test, then ends as told. */
static int end_as_told(void *arg)
{
	char byte;

	close(go_signal[1]);
	while (read(go_signal[0], &byte, 1) < 0 && errno == EINTR)
		;
	switch ((enum end_kind)(intptr_t)arg) {
	case END_EXITS_3:
		_exit(3);
	case END_SUCCEEDS:
		return 0;
	case END_KILLED_BY_SIGTERM:
		raise(SIGTERM);
		return 98;
	default:
		return 97;
	}
}

/* Starts one task of each kind with SIGCHLD ignored, lets them end, and
 * waits; returns the group, SIGCHLD restored. */
static errgroup *run_each_kind_reaped_by_the_kernel(void)
{
	struct sigaction ignore, old;
	errgroup *g = errgroup_new();

	assert_non_null(g);
	assert_int_equal(pipe2(go_signal, O_CLOEXEC), 0);
	memset(&ignore, 0, sizeof ignore);
	ignore.sa_handler = SIG_IGN;
	assert_int_equal(sigaction(SIGCHLD, &ignore, &old), 0);
	for (int kind = 0; kind < END_KINDS; kind++)
		assert_int_equal(errgroup_go(g, end_as_told, (void *)(intptr_t)kind), kind);
	close(go_signal[1]);
	errgroup_wait(g);
	assert_int_equal(sigaction(SIGCHLD, &old, NULL), 0);
	close(go_signal[0]);
	return g;
}

static int exit_3_at_once(void *arg)
{
	(void)arg;
	_exit(3);
}

static const struct errgroup_error *error_of(errgroup *g, int task)
{
	for (size_t i = 0; i < errgroup_error_count(g); i++)
		if (errgroup_error_at(g, i)->task == task)
			return errgroup_error_at(g, i);
	return NULL;
}

static void expect_lost(const struct errgroup_error *e)
{
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_EXITED);
	assert_int_equal(e->code, -1);
	assert_non_null(strstr(e->message, "lost"));
}

/* Every task failed, its status lost. */
static void expect_each_lost(errgroup *g)
{
	assert_int_equal(errgroup_error_count(g), END_KINDS);
	for (int kind = 0; kind < END_KINDS; kind++)
		expect_lost(error_of(g, kind));
}

static void skip_unless_the_kernel_keeps_statuses(void)
{
	if (!kernel_keeps_reaped_status())
		skip();
}

/* ---- tests ---- */

/* Every task's first two asks land in the window: each status still
 * comes through, and a success stays a success. */
static void test_status_recorded_late_is_waited_for(void **state)
{
	const struct errgroup_error *e;
	errgroup *g;

	(void)state;
	skip_unless_the_kernel_keeps_statuses();
	hide_status(ANSWER_NOT_YET, 2);
	g = run_each_kind_reaped_by_the_kernel();

	assert_int_equal(fds_asked(3), END_KINDS);
	assert_int_equal(fds_asked_at_all(), END_KINDS);
	assert_int_equal(errgroup_error_count(g), 2);
	e = error_of(g, END_EXITS_3);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_EXITED);
	assert_int_equal(e->code, 3);
	e = error_of(g, END_KILLED_BY_SIGTERM);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_SIGNALED);
	assert_int_equal(e->code, SIGTERM);
	assert_null(error_of(g, END_SUCCEEDS));
	errgroup_free(g);
	assert_true(no_children_left());
}

/* A kernel that never records it: asked a bounded number of times, then
 * lost; wait does not hang. */
static void test_status_never_recorded_is_lost_after_a_bound(void **state)
{
	errgroup *g;

	(void)state;
	skip_unless_the_kernel_keeps_statuses();
	hide_status(ANSWER_NOT_YET, HIDE_FOREVER);
	g = run_each_kind_reaped_by_the_kernel();

	assert_int_equal(fds_asked_at_all(), END_KINDS);
	assert_int_equal(fds_asked(1), 0);
	expect_each_lost(g);
	errgroup_free(g);
	assert_true(no_children_left());
}

/* Released without a status (6.13, 6.14): lost at the first ask, no
 * waiting for what will not come.  The wrapper answers every ask, so any
 * kernel with pidfds will do. */
static void test_status_released_unrecorded_is_lost_at_once(void **state)
{
	errgroup *g;

	(void)state;
	if (!pidfd_supported())
		skip();
	hide_status(ANSWER_GONE, HIDE_FOREVER);
	g = run_each_kind_reaped_by_the_kernel();

	assert_int_equal(fds_asked(1), END_KINDS);
	assert_int_equal(fds_asked_at_all(), END_KINDS);
	expect_each_lost(g);
	errgroup_free(g);
	assert_true(no_children_left());
}

/* A task that is dead and waits for its status ended on its own: a
 * cancel meanwhile must not make its failure the group's doing. */
static void test_task_waiting_for_its_status_is_not_taken_for_canceled(void **state)
{
	struct pollfd p = { .events = POLLIN };
	const struct errgroup_error *e;
	struct sigaction ignore, old;
	errgroup *g;
	char byte;

	(void)state;
	skip_unless_the_kernel_keeps_statuses();
	hide_status(ANSWER_NOT_YET, HIDE_FOREVER);
	assert_int_equal(pipe2(hidden_ask_seen, O_CLOEXEC | O_NONBLOCK), 0);
	assert_int_equal(pipe2(go_signal, O_CLOEXEC), 0);
	g = errgroup_new();
	assert_non_null(g);
	/* A supervisor thread reaps while the test does not wait. */
	assert_int_equal(errgroup_set_cancel_on_error(g, true), 0);
	memset(&ignore, 0, sizeof ignore);
	ignore.sa_handler = SIG_IGN;
	assert_int_equal(sigaction(SIGCHLD, &ignore, &old), 0);
	/* Blocks until canceled. */
	assert_int_equal(errgroup_go(g, end_as_told, (void *)(intptr_t)END_SUCCEEDS), 0);
	assert_int_equal(errgroup_go(g, exit_3_at_once, NULL), 1);
	p.fd = hidden_ask_seen[0];
	assert_int_equal(poll(&p, 1, WAIT_LIMIT_MS), 1);
	assert_int_equal(read(hidden_ask_seen[0], &byte, 1), 1);

	errgroup_cancel(g);
	atomic_store(&hidden_asks, 0);
	errgroup_wait(g);
	assert_int_equal(sigaction(SIGCHLD, &old, NULL), 0);

	e = error_of(g, 1);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_EXITED);
	assert_int_equal(e->code, 3);
	e = error_of(g, 0);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_CANCELED);
	assert_int_equal(e->code, SIGTERM);
	errgroup_free(g);
	assert_true(no_children_left());
	close(go_signal[0]);
	close(go_signal[1]);
	close(hidden_ask_seen[0]);
	close(hidden_ask_seen[1]);
	hidden_ask_seen[0] = hidden_ask_seen[1] = -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_recorded_late_is_waited_for),
		cmocka_unit_test(test_status_never_recorded_is_lost_after_a_bound),
		cmocka_unit_test(test_status_released_unrecorded_is_lost_at_once),
		cmocka_unit_test(test_task_waiting_for_its_status_is_not_taken_for_canceled),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
