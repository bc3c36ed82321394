/*
 * test_cancel.c - cancellation: cancel-on-error, errgroup_cancel, the grace
 * period and its SIGKILL, stopped children, blocked and later go() calls,
 * reuse after wait, and the task's whole process group; errgroup_signal,
 * which sends the same signals for the caller.
 *
 * Tasks tell the test they are ready (their signal dispositions set, about
 * to block) through a pipe; the test only cancels once they are.  Where the
 * test must know that one of its threads is blocked inside the library, it
 * reads the thread's current system call from /proc.
 */
#include "helpers.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>

static uint64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A pidfd for pid, or -1 where there are none (valgrind answers ENOSYS). */
static int pidfd_open_if_any(pid_t pid)
{
	int pidfd = pidfd_open(pid, 0);

	assert_true(pidfd >= 0 || errno == ENOSYS);
	return pidfd;
}

/*
 * Waits until pid has exited, and leaves it unreaped: through its pidfd,
 * false after WAIT_LIMIT_MS; without one, pid must be our child (or one
 * the group reaps: then ECHILD), and a hang is the runner's timeout.
 */
static bool await_exit(pid_t pid, int pidfd)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	siginfo_t si;
	int r;

	if (pidfd >= 0) {
		do
			r = poll(&p, 1, WAIT_LIMIT_MS);
		while (r < 0 && errno == EINTR);
		return r == 1 && (p.revents & POLLIN);
	}
	do
		r = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT);
	while (r < 0 && errno == EINTR);
	return r == 0 || errno == ECHILD;
}

/* Whether pid exits by itself (await_exit); else it is killed, so that a
 * failure leaves nothing behind and no call waiting for it.  Closes
 * pidfd. */
static bool exits_or_is_killed(pid_t pid, int pidfd)
{
	bool exited = await_exit(pid, pidfd);

	if (!exited)
		kill(pid, SIGKILL);
	if (pidfd >= 0)
		close(pidfd);
	return exited;
}

/* Forks counted in this process (the library forks with glibc's fork()). */
static atomic_int fork_count;

static void count_fork(void)
{
	atomic_fetch_add(&fork_count, 1);
}

static int setup_count_forks(void **state)
{
	(void)state;
	return pthread_atfork(NULL, count_fork, NULL) == 0 ? 0 : -1;
}

/*
 * True when thread tid sits in epoll_wait with a timeout other than 0:
 * blocked in the library as its poller (poll_ready() polls with 0).
 */
static bool thread_blocked_in_epoll(pid_t tid)
{
	unsigned long long args[6];
	long nr;

	if (read_thread_syscall(tid, &nr, args) < 5)
		return false;
#ifdef SYS_epoll_wait
	if (nr == SYS_epoll_wait)
		return args[3] != 0;
#endif
	if (nr == SYS_epoll_pwait)
		return args[3] != 0;
	return false;
}

static void await_thread_blocked_in_epoll(pid_t tid)
{
	uint64_t give_up = monotonic_ms() + WAIT_LIMIT_MS;

	while (!thread_blocked_in_epoll(tid) && monotonic_ms() < give_up)
		sched_yield();
}

/* ---- tasks ---- */

static int block_forever(void *arg)
{
	(void)arg;
	tell_word(getpid());
	for (;;)
		pause();
	return 0;   /* not reached */
}

static int fail_with_5(void *arg)
{
	(void)arg;
	return errgroup_errorf(5, "genuine failure");
}

static int ignore_sigterm_and_block(void *arg)
{
	(void)arg;
	signal(SIGTERM, SIG_IGN);
	tell_word(getpid());
	for (;;)
		pause();
	return 0;   /* not reached */
}

static void exit_4_on_sigterm(int sig)
{
	(void)sig;
	_exit(4);
}

/* Its SIGTERM handler can only run once the child is continued, so a
 * stopped child that ends with status 4 was sent SIGCONT. */
static int stop_with_sigterm_handler(void *arg)
{
	(void)arg;
	signal(SIGTERM, exit_4_on_sigterm);
	tell_word(getpid());
	raise(SIGSTOP);
	for (;;)
		pause();
	return 0;   /* not reached */
}

/* As block_forever, and lets any process of ours trace it: under Yama's
 * ptrace_scope 1 only an ancestor may, and the tracer is a sibling. */
static int block_forever_traceable(void *arg)
{
	(void)arg;
	prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY);   /* EINVAL without Yama */
	tell_word(getpid());
	for (;;)
		pause();
	return 0;   /* not reached */
}

/*
 * In a forked tracer that is not the task's parent, as `strace -p` or
 * `gdb -p` would be: puts the task in a ptrace stop and never resumes it.
 * Writes 0 on report once the task is stopped, or the errno ptrace gave.
 * Then, after hold_ms, waits for the task's end, as a tracer must (the
 * parent can reap a traced child only once its tracer has seen it die),
 * and exits 0 if it died of SIGKILL, 1 if it ended otherwise, 2 if
 * waiting failed.
 */
static _Noreturn void trace_and_hold(pid_t task, int report, unsigned hold_ms)
{
	struct timespec hold = { hold_ms / 1000, (long)(hold_ms % 1000) * 1000000 };
	int error = 0, status;
	pid_t r;

	if (ptrace(PTRACE_SEIZE, task, NULL, NULL) < 0 ||
	    ptrace(PTRACE_INTERRUPT, task, NULL, NULL) < 0) {
		error = errno;
	} else {
		do
			r = waitpid(task, &status, __WALL);
		while (r < 0 && errno == EINTR);
		if (r < 0)
			error = errno;
		else if (!WIFSTOPPED(status))
			error = ECHILD;
	}
	if (write(report, &error, sizeof error) != sizeof error || error)
		_exit(2);
	while (nanosleep(&hold, &hold) < 0 && errno == EINTR)
		;
	/* Any further stop is left alone too: the task stays stopped. */
	do {
		r = waitpid(task, &status, __WALL);
	} while ((r < 0 && errno == EINTR) || (r == task && WIFSTOPPED(status)));
	if (r != task)
		_exit(2);
	_exit(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL ? 0 : 1);
}

static int *shared_counter;

static int count_and_succeed(void *arg)
{
	(void)arg;
	__atomic_add_fetch(shared_counter, 1, __ATOMIC_SEQ_CST);
	return 0;
}

static int return_arg(void *arg)
{
	return (int)(intptr_t)arg;
}

static pid_t *shared_grandchild;

/* Forks a grandchild that stays in the task's process group and blocks. */
static int fork_grandchild_and_block(void *arg)
{
	pid_t pid;

	(void)arg;
	pid = fork();
	if (pid == 0) {
		for (;;)
			pause();
	}
	if (pid < 0)
		return 99;
	*shared_grandchild = pid;
	tell_word(pid);
	for (;;)
		pause();
	return 0;   /* not reached */
}

/* Forks a grandchild that stays in the task's process group and outlives
 * the group's SIGTERM; the task itself keeps SIGTERM's default action.
 * The grandchild closes its inherited fds, as a daemon would: holding the
 * lifeline's read end, it would also die when the group closes the write
 * end at the reap. */
static int fork_sigterm_ignoring_grandchild_and_block(void *arg)
{
	pid_t pid;

	(void)arg;
	pid = fork();
	if (pid == 0) {
		signal(SIGTERM, SIG_IGN);
		if (ready_pipe[1] > 3)
			close_range(3, (unsigned)ready_pipe[1] - 1, 0);
		close_range((unsigned)ready_pipe[1] + 1, ~0u, 0);
		tell_word(getpid());
		for (;;)
			pause();
	}
	if (pid < 0)
		return 99;
	for (;;)
		pause();
	return 0;   /* not reached */
}

/* The grandchild (ours to reap: the test is its subreaper) ends, killed
 * by SIGKILL; it is reaped, and pidfd (if any) closed, either way. */
static void assert_grandchild_dies_of_sigkill(pid_t grandchild, int pidfd)
{
	siginfo_t si;
	bool died;
	int r;

	died = exits_or_is_killed(grandchild, pidfd);
	do {
		memset(&si, 0, sizeof si);
		r = waitid(P_PID, (id_t)grandchild, &si, WEXITED);
	} while (r < 0 && errno == EINTR);
	assert_true(died);
	assert_int_equal(r, 0);
	assert_int_equal(si.si_code, CLD_KILLED);
	assert_int_equal(si.si_status, SIGKILL);
}

/* Forks a grandchild that stays in the task's process group, closes its
 * inherited fds as a daemon would (so the lifeline cannot kill it), and
 * blocks; returns 0 once the grandchild is ready. */
static int fork_fd_closing_grandchild_and_return(void *arg)
{
	int ready[2];
	pid_t pid;
	char c;

	(void)arg;
	if (pipe(ready) < 0)
		return 98;
	pid = fork();
	if (pid == 0) {
		int keep_low = ready_pipe[1] < ready[1] ? ready_pipe[1] : ready[1];
		int keep_high = ready_pipe[1] < ready[1] ? ready[1] : ready_pipe[1];

		if (keep_low > 3)
			close_range(3, (unsigned)keep_low - 1, 0);
		if (keep_high > keep_low + 1)
			close_range((unsigned)keep_low + 1, (unsigned)keep_high - 1, 0);
		close_range((unsigned)keep_high + 1, ~0u, 0);
		tell_word(getpid());
		if (write(ready[1], "x", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	if (pid < 0)
		return 99;
	close(ready[1]);
	return read(ready[0], &c, 1) == 1 ? 0 : 97;
}

/*
 * A task that ends by itself, successfully, takes what it left in its
 * process group with it: the grandchild closed the lifeline, so only the
 * SIGKILL the group sends its process group at the reap can end it.  The
 * test is the grandchild's subreaper, to read how it died.
 */
static void test_leftovers_of_a_task_that_succeeded_die_of_sigkill_at_its_reap(void **state)
{
	errgroup *g = errgroup_new();
	pid_t grandchild;
	int pidfd;

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	assert_int_equal(errgroup_go(g, fork_fd_closing_grandchild_and_return, NULL), 0);
	grandchild = await_word();
	pidfd = pidfd_open_if_any(grandchild);

	assert_null(errgroup_wait(g));
	assert_grandchild_dies_of_sigkill(grandchild, pidfd);
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
	errgroup_free(g);
	assert_true(no_children_left());
	ready_pipe_close();
}

static volatile sig_atomic_t got_sigterm;

static void note_sigterm(int sig)
{
	(void)sig;
	got_sigterm = 1;
}

/* Ends on its own, unsuccessfully, after the group signalled it. */
static int fail_with_3_on_sigterm(void *arg)
{
	struct sigaction sa;
	sigset_t term, old;

	(void)arg;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = note_sigterm;
	sigaction(SIGTERM, &sa, NULL);
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigprocmask(SIG_BLOCK, &term, &old);
	tell_word(getpid());
	while (!got_sigterm)
		sigsuspend(&old);
	errgroup_errorf(3, "cleaned up after SIGTERM");
	_exit(3);
}

/*
 * Forks a child that stays in the task's process group, then leaves that
 * group for the test's own (of the same session), tells its pid (0 if it
 * could not), and blocks: signals sent to the task's group reach the
 * child only.
 */
static int leave_own_group_and_block(void *arg)
{
	pid_t pid;

	(void)arg;
	pid = fork();
	if (pid == 0) {
		for (;;)
			pause();
	}
	if (pid < 0 || setpgid(0, getpgid(getppid())) < 0) {
		tell_word(0);
		return 99;
	}
	tell_word(getpid());
	for (;;)
		pause();
	return 0;   /* not reached */
}

/*
 * Counts the SIGTERMs it gets until the test's SIGUSR1, and tells their
 * number.  Two SIGTERMs sent while the first is still pending merge into
 * one, so a second would go unseen unless the task takes each as soon as
 * it comes: it runs SCHED_FIFO on the test's only CPU, so that a signal
 * that wakes it has it run, take the signal and wait again before the
 * sender returns from its system call.  Tells its pid, then 1 if it got
 * SCHED_FIFO, else 0.
 */
static int count_sigterms_until_sigusr1(void *arg)
{
	struct sched_param fifo = { .sched_priority = 1 };
	struct timespec now = { 0, 0 };
	sigset_t wanted, term;
	int sigterms = 0, sig;

	(void)arg;
	sigemptyset(&wanted);
	sigaddset(&wanted, SIGTERM);
	sigaddset(&wanted, SIGUSR1);
	sigprocmask(SIG_BLOCK, &wanted, NULL);
	tell_word(getpid());
	tell_word(sched_setscheduler(0, SCHED_FIFO, &fifo) == 0);
	while ((sig = sigwaitinfo(&wanted, NULL)) != SIGUSR1)
		if (sig == SIGTERM)
			sigterms++;
	/* SIGUSR1 comes first of two pending: one may wait behind it. */
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	if (sigtimedwait(&term, NULL, &now) == SIGTERM)
		sigterms++;
	tell_word(sigterms);
	return 0;
}

/* ---- tests ---- */

static void test_cancel_on_error_stops_blocked_siblings_after_the_genuine_failure(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	assert_int_equal(errgroup_set_cancel_on_error(g, true), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(errgroup_go(g, block_forever, NULL), i);
	for (int i = 0; i < 3; i++)
		await_word();
	assert_int_equal(errgroup_go(g, fail_with_5, NULL), 3);

	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(e->task, 3);
	assert_int_equal(e->cause, ERRGROUP_RETURNED);
	assert_int_equal(e->code, 5);
	assert_string_equal(e->message, "genuine failure");
	assert_int_equal(errgroup_error_count(g), 4);
	for (size_t i = 1; i < 4; i++) {
		e = errgroup_error_at(g, i);
		assert_non_null(e);
		assert_in_range(e->task, 0, 2);
		assert_int_equal(e->cause, ERRGROUP_CANCELED);
		assert_int_equal(e->code, SIGTERM);
	}
	errgroup_free(g);
	ready_pipe_close();
}

/* The caller never calls wait while the siblings are stopped: the group
 * must act on the failure by itself. */
static void test_cancel_on_error_is_prompt_while_the_caller_is_busy(void **state)
{
	errgroup *g = errgroup_new();
	pid_t pids[2];
	int pidfds[2];

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	assert_int_equal(errgroup_set_cancel_on_error(g, true), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(errgroup_go(g, block_forever, NULL), i);
		pids[i] = await_word();
		pidfds[i] = pidfd_open_if_any(pids[i]);
	}
	assert_int_equal(errgroup_go(g, fail_with_5, NULL), 2);
	for (int i = 0; i < 2; i++) {
		assert_true(await_exit(pids[i], pidfds[i]));
		if (pidfds[i] >= 0)
			close(pidfds[i]);
	}
	assert_int_equal(errgroup_wait(g)->code, 5);
	errgroup_free(g);
	ready_pipe_close();
}

static int tell_pid_and_fail_with_5(void *arg)
{
	(void)arg;
	tell_word(getpid());
	return errgroup_errorf(5, "genuine failure");
}

/* Turned on while tasks run, with one of them failed and not yet reaped,
 * cancel-on-error acts without the caller: it has no go() to come. */
static void test_cancel_on_error_turned_on_while_tasks_run_is_prompt(void **state)
{
	errgroup *g = errgroup_new();
	pid_t blocked, failed;
	int pidfd;

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	assert_int_equal(errgroup_go(g, block_forever, NULL), 0);
	blocked = await_word();
	pidfd = pidfd_open_if_any(blocked);
	assert_int_equal(errgroup_go(g, tell_pid_and_fail_with_5, NULL), 1);
	failed = await_word();
	assert_true(await_exit(failed, -1));
	assert_int_equal(errgroup_set_cancel_on_error(g, true), 0);
	assert_true(exits_or_is_killed(blocked, pidfd));
	assert_int_equal(errgroup_wait(g)->code, 5);
	assert_int_equal(errgroup_error_at(g, 1)->cause, ERRGROUP_CANCELED);
	errgroup_free(g);
	ready_pipe_close();
}

static void test_sigterm_ignored_gets_sigkill_after_grace(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();
	uint64_t start;

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	assert_int_equal(errgroup_set_grace_ms(g, 100), 0);
	assert_int_equal(errgroup_go(g, ignore_sigterm_and_block, NULL), 0);
	await_word();

	start = monotonic_ms();
	errgroup_cancel(g);
	e = errgroup_wait(g);
	assert_true(monotonic_ms() - start >= 100);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_CANCELED);
	assert_int_equal(e->code, SIGKILL);
	errgroup_free(g);
	ready_pipe_close();
}

/* A task that keeps SIGTERM's default action would die of SIGTERM had it
 * been sent first; with no grace it dies of SIGKILL. */
static void test_zero_grace_sends_sigkill_at_once(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	assert_int_equal(errgroup_set_grace_ms(g, 0), 0);
	assert_int_equal(errgroup_go(g, block_forever, NULL), 0);
	assert_int_equal(errgroup_go(g, ignore_sigterm_and_block, NULL), 1);
	await_word();
	await_word();

	errgroup_cancel(g);
	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(errgroup_error_count(g), 2);
	for (size_t i = 0; i < 2; i++) {
		e = errgroup_error_at(g, i);
		assert_int_equal(e->cause, ERRGROUP_CANCELED);
		assert_int_equal(e->code, SIGKILL);
	}
	errgroup_free(g);
	ready_pipe_close();
}

static void test_stopped_child_is_canceled_within_the_grace(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();
	siginfo_t si;
	pid_t pid;
	int r;

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	assert_int_equal(errgroup_set_grace_ms(g, 20000), 0);
	assert_int_equal(errgroup_go(g, stop_with_sigterm_handler, NULL), 0);
	pid = await_word();
	/* The task is our child: see it stopped, and leave the report. */
	do {
		memset(&si, 0, sizeof si);
		r = waitid(P_PID, (id_t)pid, &si, WSTOPPED | WNOWAIT);
	} while (r < 0 && errno == EINTR);
	assert_int_equal(r, 0);
	assert_int_equal(si.si_code, CLD_STOPPED);

	errgroup_cancel(g);
	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_CANCELED);
	assert_int_equal(e->code, 4);   /* its SIGTERM handler ran: not SIGKILL */
	errgroup_free(g);
	ready_pipe_close();
}

/*
 * Forks a tracer for pid (trace_and_hold) and waits until the task is in
 * its ptrace stop.  Returns the tracer's pid, or 0 if ptrace was refused
 * (seccomp, Yama 3, no CAP_SYS_PTRACE in a user namespace), the tracer
 * then reaped and the reason printed.  A tracer that hangs is the
 * runner's timeout.
 */
static pid_t start_tracer(pid_t pid, unsigned hold_ms)
{
	int report[2], error = -1, status;
	pid_t tracer;

	assert_int_equal(pipe2(report, O_CLOEXEC), 0);
	tracer = fork();
	assert_true(tracer >= 0);
	if (tracer == 0)
		trace_and_hold(pid, report[1], hold_ms);
	close(report[1]);
	if (read(report[0], &error, sizeof error) != sizeof error)
		error = -1;
	close(report[0]);
	if (error == 0)
		return tracer;
	assert_int_equal(waitpid(tracer, &status, 0), tracer);
	print_message("ptrace refused: %s\n", error > 0 ? strerror(error) : "?");
	return 0;
}

/* True if the tracer saw its task die of SIGKILL (trace_and_hold). */
static bool tracer_saw_sigkill(pid_t tracer)
{
	int status;

	return waitpid(tracer, &status, 0) == tracer && WIFEXITED(status) &&
	       WEXITSTATUS(status) == 0;
}

/*
 * Scenario 9: a task held in a ptrace stop by another process cannot act
 * on SIGTERM, nor be woken by SIGCONT, until its tracer resumes it.  The
 * group must neither take the stop for the task's end nor wait for the
 * tracer: the SIGKILL at the end of the grace ends it.
 */
static void test_ptrace_stopped_task_is_still_canceled_within_the_grace(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();
	pid_t tracer;

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	assert_int_equal(errgroup_set_grace_ms(g, 100), 0);
	assert_int_equal(errgroup_go(g, block_forever_traceable, NULL), 0);
	tracer = start_tracer(await_word(), 0);
	if (!tracer) {
		errgroup_free(g);
		ready_pipe_close();
		skip();
	}

	errgroup_cancel(g);
	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_CANCELED);
	assert_int_equal(e->code, SIGKILL);
	assert_true(tracer_saw_sigkill(tracer));
	errgroup_free(g);
	assert_true(no_children_left());
	ready_pipe_close();
}

static long cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

/*
 * A task traced by another process is not the group's to reap until its
 * tracer has seen it die, yet its pidfd turns readable the moment it dies.
 * Re-arming the event made the poller spin for as long as the tracer took
 * (a second of CPU for a second's hold); the group now retries at the
 * sweep's pace.  The bound is on CPU time, not on wall time: a loaded
 * machine can only make a spinning poller look cheaper, never a sleeping
 * one dearer.
 */
static void test_dead_task_a_slow_tracer_holds_does_not_spin_the_poller(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();
	long before, used;
	pid_t tracer;

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	assert_int_equal(errgroup_set_grace_ms(g, 50), 0);
	assert_int_equal(errgroup_go(g, block_forever_traceable, NULL), 0);
	tracer = start_tracer(await_word(), 1000);
	if (!tracer) {
		errgroup_free(g);
		ready_pipe_close();
		skip();
	}

	before = cpu_ms();
	errgroup_cancel(g);
	e = errgroup_wait(g);
	used = cpu_ms() - before;
	print_message("%ld ms of CPU while the tracer held the dead task\n", used);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_CANCELED);
	assert_int_equal(e->code, SIGKILL);
	assert_true(tracer_saw_sigkill(tracer));
	assert_true(used < 400);
	errgroup_free(g);
	assert_true(no_children_left());
	ready_pipe_close();
}

static int ignore_sigterm_and_block_traceable(void *arg)
{
	signal(SIGTERM, SIG_IGN);
	return block_forever_traceable(arg);
}

/* One run of the test below with a timeout of ms: true if the task was
 * traced and trapped while it ran, and ended by the grace's SIGKILL;
 * false if it ended before the test could trace it (the run proves
 * nothing).  Skips if ptrace is refused. */
static bool traced_task_times_out(unsigned ms)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();
	bool traced = false;
	int life[2], r;
	siginfo_t si;
	pid_t pid;

	assert_non_null(g);
	assert_int_equal(pipe2(life, O_CLOEXEC), 0);
	assert_int_equal(errgroup_set_grace_ms(g, 100), 0);
	assert_int_equal(errgroup_set_timeout_ms(g, ms), 0);
	assert_int_equal(errgroup_go(g, ignore_sigterm_and_block_traceable, NULL), 0);
	close(life[1]);
	pid = await_word_or_hangup(life[0]);
	close(life[0]);
	if (pid > 0 && ptrace(PTRACE_SEIZE, pid, NULL, NULL) < 0) {
		if (errno != ESRCH) {
			print_message("ptrace refused: %s\n", strerror(errno));
			errgroup_free(g);
			ready_pipe_close();
			skip();
		}
	} else if (pid > 0 && ptrace(PTRACE_INTERRUPT, pid, NULL, NULL) == 0) {
		/* Stopped, and its report left pending, as a debugger leaves
		 * it; unless the grace's SIGKILL came first. */
		do {
			memset(&si, 0, sizeof si);
			r = waitid(P_PID, (id_t)pid, &si, WSTOPPED | WEXITED | WNOWAIT);
		} while (r < 0 && errno == EINTR);
		traced = r == 0 && si.si_code == CLD_TRAPPED;
	}

	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_TIMEOUT);
	if (traced)
		assert_int_equal(e->code, SIGKILL);
	errgroup_free(g);
	assert_true(no_children_left());
	return traced;
}

/*
 * Scenario 9 again, with the host as the tracer: the kernel then reports
 * the task's ptrace stops to every waitid of the host's process, whatever
 * its options.  The group must not take such a stop for the task's end
 * (nor consume the host's report), so the timeout still stops the task,
 * by the SIGKILL at the end of the grace, which a ptrace stop cannot hold
 * back.  The task ignores SIGTERM, so that the outcome is the same should
 * the timer fire before the stop.  A machine too slow to trace the task
 * within its timeout and grace gives a run that proves nothing: it runs
 * again with a timeout twice as long.
 */
static void test_task_the_host_traces_is_not_taken_for_ended_by_its_stop(void **state)
{
	(void)state;
	ready_pipe_open();
	for (unsigned ms = 1000; !traced_task_times_out(ms); ms *= 2)
		assert_true(ms < 16000);
	ready_pipe_close();
}

struct cancel_when_blocked {
	errgroup *g;
	pid_t tid;
};

static void *cancel_when_blocked(void *arg)
{
	struct cancel_when_blocked *c = arg;

	await_thread_blocked_in_epoll(c->tid);
	errgroup_cancel(c->g);
	return NULL;
}

static void test_go_blocked_at_the_limit_returns_ecanceled_without_forking(void **state)
{
	struct cancel_when_blocked c;
	errgroup *g = errgroup_new();
	pthread_t canceler;
	int forks_before;
	uint64_t start;

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	shared_counter = shared_alloc(sizeof *shared_counter);
	/* The slot stays taken through the grace: go() must return on the
	 * cancel itself, not when the slot frees. */
	assert_int_equal(errgroup_set_limit(g, 1), 0);
	assert_int_equal(errgroup_set_grace_ms(g, 60000), 0);
	assert_int_equal(errgroup_go(g, ignore_sigterm_and_block, NULL), 0);
	await_word();

	c.g = g;
	c.tid = gettid();
	forks_before = atomic_load(&fork_count);
	start = monotonic_ms();
	assert_int_equal(pthread_create(&canceler, NULL, cancel_when_blocked, &c), 0);
	assert_int_equal(errgroup_go(g, count_and_succeed, NULL), -ECANCELED);
	assert_true(monotonic_ms() - start < 30000);
	assert_int_equal(pthread_join(canceler, NULL), 0);
	assert_int_equal(atomic_load(&fork_count), forks_before);
	assert_int_equal(*shared_counter, 0);
	errgroup_free(g);   /* SIGKILL now, not after the grace */
	shared_free(shared_counter, sizeof *shared_counter);
	ready_pipe_close();
}

static void test_cancel_from_another_thread_ends_wait(void **state)
{
	const struct errgroup_error *e;
	struct cancel_when_blocked c;
	errgroup *g = errgroup_new();
	pthread_t canceler;

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	assert_int_equal(errgroup_go(g, block_forever, NULL), 0);
	await_word();

	c.g = g;
	c.tid = gettid();
	assert_int_equal(pthread_create(&canceler, NULL, cancel_when_blocked, &c), 0);
	e = errgroup_wait(g);
	assert_int_equal(pthread_join(canceler, NULL), 0);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_CANCELED);
	assert_int_equal(e->code, SIGTERM);
	errgroup_free(g);
	ready_pipe_close();
}

static void test_go_after_cancel_returns_ecanceled_also_after_wait(void **state)
{
	errgroup *g = errgroup_new();
	int forks_before = atomic_load(&fork_count);

	(void)state;
	assert_non_null(g);
	errgroup_cancel(g);
	assert_int_equal(errgroup_go(g, return_arg, NULL), -ECANCELED);
	assert_int_equal(errgroup_try_go(g, return_arg, NULL), -ECANCELED);
	assert_null(errgroup_wait(g));
	assert_int_equal(errgroup_go(g, return_arg, NULL), -ECANCELED);
	assert_int_equal(errgroup_try_go(g, return_arg, NULL), -ECANCELED);
	assert_int_equal(atomic_load(&fork_count), forks_before);
	assert_int_equal(errgroup_error_count(g), 0);
	errgroup_free(g);
}

static void test_cancel_on_error_is_final_after_wait(void **state)
{
	errgroup *g = errgroup_new();
	int forks_before;

	(void)state;
	assert_non_null(g);
	assert_int_equal(errgroup_set_cancel_on_error(g, true), 0);
	assert_int_equal(errgroup_go(g, return_arg, (void *)(intptr_t)6), 0);
	assert_int_equal(errgroup_wait(g)->code, 6);

	forks_before = atomic_load(&fork_count);
	assert_int_equal(errgroup_go(g, return_arg, NULL), -ECANCELED);
	assert_int_equal(errgroup_try_go(g, return_arg, NULL), -ECANCELED);
	assert_int_equal(atomic_load(&fork_count), forks_before);
	assert_int_equal(errgroup_wait(g)->code, 6);
	errgroup_free(g);
}

static void test_uncanceled_group_is_reusable_and_its_first_error_sticky(void **state)
{
	const struct errgroup_error *first, *e;
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	assert_int_equal(errgroup_go(g, return_arg, (void *)(intptr_t)3), 0);
	first = errgroup_wait(g);
	assert_non_null(first);
	assert_int_equal(first->task, 0);
	assert_int_equal(first->code, 3);

	assert_int_equal(errgroup_go(g, return_arg, NULL), 1);
	assert_ptr_equal(errgroup_wait(g), first);
	assert_int_equal(errgroup_go(g, return_arg, (void *)(intptr_t)4), 2);
	assert_ptr_equal(errgroup_wait(g), first);
	assert_int_equal(first->task, 0);
	assert_int_equal(first->code, 3);

	assert_int_equal(errgroup_error_count(g), 2);
	e = errgroup_error_at(g, 1);
	assert_int_equal(e->task, 2);
	assert_int_equal(e->cause, ERRGROUP_RETURNED);
	assert_int_equal(e->code, 4);
	errgroup_free(g);
}

/* The test is the grandchild's subreaper, so it can tell the grandchild's
 * death (its pidfd turns readable) and then reap it itself. */
static void test_canceled_task_grandchild_dies_too(void **state)
{
	errgroup *g = errgroup_new();
	siginfo_t si;
	pid_t grandchild;
	int pidfd, r;

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	shared_grandchild = shared_alloc(sizeof *shared_grandchild);
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	assert_int_equal(errgroup_go(g, fork_grandchild_and_block, NULL), 0);
	grandchild = await_word();
	assert_int_equal(*shared_grandchild, grandchild);
	pidfd = pidfd_open_if_any(grandchild);

	errgroup_cancel(g);
	assert_int_equal(errgroup_wait(g)->cause, ERRGROUP_CANCELED);
	/* The task is reaped: the grandchild is ours now. */
	assert_true(await_exit(grandchild, pidfd));
	do {
		memset(&si, 0, sizeof si);
		r = waitid(P_PID, (id_t)grandchild, &si, WEXITED);
	} while (r < 0 && errno == EINTR);
	assert_int_equal(r, 0);
	/* By the cancel's own SIGTERM to the task's process group (under
	 * valgrind it may not act before the SIGKILL that follows). */
	assert_int_equal(si.si_code, CLD_KILLED);
	if (!under_valgrind() || si.si_status != SIGKILL)
		assert_int_equal(si.si_status, SIGTERM);
	assert_int_equal(kill(grandchild, 0), -1);
	assert_int_equal(errno, ESRCH);

	if (pidfd >= 0)
		close(pidfd);
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
	errgroup_free(g);
	shared_free(shared_grandchild, sizeof *shared_grandchild);
	ready_pipe_close();
}

/*
 * P2-C: the leader dies of the cancel's SIGTERM, its grandchild shrugs it
 * off.  The grace's SIGKILL is an hour away, so only the SIGKILL that
 * reaping a canceled leader sends to what is left of its process group
 * can end the grandchild.  The test is the grandchild's subreaper, to read
 * how it died.
 */
static void test_canceled_task_leftovers_die_of_sigkill_once_the_leader_is_reaped(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();
	pid_t grandchild;
	int pidfd;

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	assert_int_equal(errgroup_set_grace_ms(g, 3600000), 0);
	assert_int_equal(errgroup_go(g, fork_sigterm_ignoring_grandchild_and_block, NULL), 0);
	grandchild = await_word();
	pidfd = pidfd_open_if_any(grandchild);

	errgroup_cancel(g);
	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_CANCELED);
	assert_int_equal(e->code, SIGTERM);   /* the leader: not the grace's SIGKILL */
	assert_grandchild_dies_of_sigkill(grandchild, pidfd);
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
	errgroup_free(g);
	assert_true(no_children_left());
	ready_pipe_close();
}

static void test_child_failing_on_its_own_after_the_signal_is_canceled_with_its_code(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	assert_int_equal(errgroup_go(g, fail_with_3_on_sigterm, NULL), 0);
	await_word();

	errgroup_cancel(g);
	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_CANCELED);
	assert_int_equal(e->code, 3);
	assert_string_equal(e->message, "cleaned up after SIGTERM");
	errgroup_free(g);
	ready_pipe_close();
}

/* A task that failed and exited before the cancel, but that nobody has
 * reaped yet (no thread polls a plain group between calls), failed on its
 * own: its error stays RETURNED, and it is the first. */
static void test_task_that_failed_before_the_cancel_keeps_its_own_error(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();
	siginfo_t si;

	(void)state;
	assert_non_null(g);
	assert_int_equal(errgroup_go(g, fail_with_5, NULL), 0);
	/* Until it has exited; WNOWAIT leaves it to the group. */
	memset(&si, 0, sizeof si);
	assert_int_equal(waitid(P_ALL, 0, &si, WEXITED | WNOWAIT), 0);

	errgroup_cancel(g);
	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(e->task, 0);
	assert_int_equal(e->cause, ERRGROUP_RETURNED);
	assert_int_equal(e->code, 5);
	assert_string_equal(e->message, "genuine failure");
	assert_int_equal(errgroup_error_count(g), 1);
	assert_int_equal(errgroup_go(g, fail_with_5, NULL), -ECANCELED);
	errgroup_free(g);
}

/* Starts leave_own_group_and_block in g: its pid, and in *pidfd its pidfd
 * or -1. */
static pid_t start_task_that_leaves_its_group(errgroup *g, int *pidfd)
{
	pid_t task;

	assert_int_equal(errgroup_go(g, leave_own_group_and_block, NULL), 0);
	task = await_word();
	assert_true(task > 0);
	*pidfd = pidfd_open_if_any(task);
	return task;
}

static void *free_group(void *g)
{
	errgroup_free(g);
	return NULL;
}

/*
 * A task that left its process group, where its child stayed, is no
 * longer reached by a signal to that group: errgroup_free must still kill
 * and reap it.  free runs in a thread, so that a task it never killed
 * fails the test instead of hanging it.
 */
static void test_free_kills_a_task_that_left_its_process_group(void **state)
{
	errgroup *g = errgroup_new();
	pthread_t freeing;
	pid_t task;
	bool died;
	int pidfd;

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	task = start_task_that_leaves_its_group(g, &pidfd);

	assert_int_equal(pthread_create(&freeing, NULL, free_group, g), 0);
	died = exits_or_is_killed(task, pidfd);
	assert_int_equal(pthread_join(freeing, NULL), 0);
	assert_true(died);
	assert_true(no_children_left());
	ready_pipe_close();
}

/* Likewise for a cancel: the task gets the SIGTERM itself.  The grace is
 * an hour, so only that SIGTERM can end it in time. */
static void test_cancel_stops_a_task_that_left_its_process_group(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();
	pid_t task;
	bool died;
	int pidfd;

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	assert_int_equal(errgroup_set_grace_ms(g, 3600000), 0);
	task = start_task_that_leaves_its_group(g, &pidfd);

	errgroup_cancel(g);
	died = exits_or_is_killed(task, pidfd);
	e = errgroup_wait(g);
	assert_true(died);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_CANCELED);
	assert_int_equal(e->code, SIGTERM);
	errgroup_free(g);
	ready_pipe_close();
}

/*
 * A task still in its own process group gets one SIGTERM from a cancel,
 * not one through its group and a second one to itself: a program may
 * read a second SIGTERM as "quit now, without cleaning up".  The test and
 * its task share one CPU, where the task runs SCHED_FIFO (see
 * count_sigterms_until_sigusr1), so that a second SIGTERM would be
 * counted, not merged with the first.
 */
static void test_cancel_sends_a_task_in_its_group_one_sigterm(void **state)
{
	errgroup *g = errgroup_new();
	cpu_set_t saved, one;
	bool fifo;
	pid_t task;
	int sigterms;

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	assert_int_equal(sched_getaffinity(0, sizeof saved, &saved), 0);
	CPU_ZERO(&one);
	CPU_SET(sched_getcpu(), &one);
	assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
	assert_int_equal(errgroup_set_grace_ms(g, 3600000), 0);
	assert_int_equal(errgroup_go(g, count_sigterms_until_sigusr1, NULL), 0);
	task = await_word();
	fifo = await_word();

	errgroup_cancel(g);
	/* The task is unreaped until it leaves, which it does only now. */
	assert_int_equal(kill(task, SIGUSR1), 0);
	sigterms = await_word();
	assert_null(errgroup_wait(g));
	errgroup_free(g);
	assert_int_equal(sched_setaffinity(0, sizeof saved, &saved), 0);
	if (!fifo)
		print_message("SCHED_FIFO refused: a second SIGTERM could have merged unseen\n");
	assert_int_equal(sigterms, 1);
	ready_pipe_close();
}

/* The task tells its pid and then its grandchild's, which stays in the
 * task's process group.  Once a byte comes on the pipe arg, the grandchild
 * tells 1 and exits, and the task returns 0 when it has. */
static int fork_grandchild_that_waits_for_a_byte(void *arg)
{
	int *gate = arg;
	int status;
	pid_t pid;

	pid = fork();
	if (pid == 0) {
		if (read_byte(gate[0]) < 0)
			_exit(1);
		tell_word(1);
		_exit(0);
	}
	if (pid < 0)
		return 99;
	tell_word(getpid());
	tell_word(pid);
	if (waitpid(pid, &status, 0) != pid)
		return 98;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 97;
}

/* Waits until pid's state is, or is not, 'T' (stopped): a signal takes
 * effect when its target next runs.  False after WAIT_LIMIT_MS. */
static bool await_stopped(pid_t pid, bool stopped)
{
	uint64_t start = monotonic_ms();
	char state, name[64];
	pid_t ppid, session;

	while (monotonic_ms() - start < WAIT_LIMIT_MS) {
		if (!proc_stat_fields(pid, &state, &ppid, &session, name, sizeof name))
			return false;
		if ((state == 'T') == stopped)
			return true;
		nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
	}
	return false;
}

static int await_task_state(pid_t pid, int what)
{
	siginfo_t si;
	int r;

	do {
		memset(&si, 0, sizeof si);
		r = waitid(P_PID, (id_t)pid, &si, what | WNOWAIT);
	} while (r < 0 && errno == EINTR);
	return r == 0 ? si.si_code : -1;
}

static void test_signal_suspends_and_resumes_a_task_with_what_it_started(void **state)
{
	errgroup *g = errgroup_new();
	pid_t task, grandchild;
	int gate[2];

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	assert_int_equal(pipe2(gate, O_CLOEXEC), 0);
	assert_int_equal(errgroup_go(g, fork_grandchild_that_waits_for_a_byte, gate), 0);
	task = await_word();
	grandchild = await_word();

	assert_int_equal(errgroup_signal(g, SIGSTOP), 1);
	assert_int_equal(await_task_state(task, WSTOPPED), CLD_STOPPED);
	assert_true(await_stopped(grandchild, true));

	assert_int_equal(errgroup_signal(g, SIGCONT), 1);
	assert_int_equal(await_task_state(task, WCONTINUED), CLD_CONTINUED);
	assert_true(await_stopped(grandchild, false));
	/* Told only once it runs again. */
	gate_open_n(gate[1], 1);
	assert_int_equal(await_word(), 1);
	assert_null(errgroup_wait(g));
	errgroup_free(g);
	close(gate[0]);
	close(gate[1]);
	ready_pipe_close();
}

static void test_signal_is_passed_on_and_is_no_cancellation(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	assert_int_equal(errgroup_go(g, block_forever, NULL), 0);
	await_word();
	assert_int_equal(errgroup_signal(g, SIGUSR1), 1);
	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_SIGNALED);
	assert_int_equal(e->code, SIGUSR1);
	/* The group goes on. */
	assert_int_equal(errgroup_go(g, return_arg, (void *)0), 1);
	assert_ptr_equal(errgroup_wait(g), e);
	assert_int_equal(errgroup_error_count(g), 1);
	errgroup_free(g);
	ready_pipe_close();
}

static int tell_pid_and_succeed(void *arg)
{
	(void)arg;
	tell_word(getpid());
	return 0;
}

static void test_signal_leaves_out_ended_tasks_and_refuses_non_signals(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();
	pid_t ended;

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	assert_int_equal(errgroup_signal(g, -1), -EINVAL);
	assert_int_equal(errgroup_signal(g, SIGRTMAX + 1), -EINVAL);
	assert_int_equal(errgroup_signal(g, 0), 0);
	assert_int_equal(errgroup_go(g, block_forever, NULL), 0);
	await_word();
	assert_int_equal(errgroup_go(g, tell_pid_and_succeed, NULL), 1);
	ended = await_word();
	/* Exited, and not yet reaped: a plain group reaps only in its calls,
	 * and errgroup_signal is not one that reaps. */
	assert_int_equal(await_task_state(ended, WEXITED), CLD_EXITED);
	assert_int_equal(errgroup_signal(g, 0), 1);
	assert_int_equal(errgroup_signal(g, SIGKILL), 1);
	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(e->task, 0);
	assert_int_equal(e->cause, ERRGROUP_SIGNALED);
	assert_int_equal(e->code, SIGKILL);
	assert_int_equal(errgroup_error_count(g), 1);
	errgroup_free(g);
	ready_pipe_close();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		census_test(test_cancel_on_error_stops_blocked_siblings_after_the_genuine_failure),
		census_test(test_cancel_on_error_is_prompt_while_the_caller_is_busy),
		census_test(test_cancel_on_error_turned_on_while_tasks_run_is_prompt),
		census_test(test_sigterm_ignored_gets_sigkill_after_grace),
		census_test(test_zero_grace_sends_sigkill_at_once),
		census_test(test_stopped_child_is_canceled_within_the_grace),
		census_test(test_ptrace_stopped_task_is_still_canceled_within_the_grace),
		census_test(test_task_the_host_traces_is_not_taken_for_ended_by_its_stop),
		census_test(test_dead_task_a_slow_tracer_holds_does_not_spin_the_poller),
		census_test(test_go_blocked_at_the_limit_returns_ecanceled_without_forking),
		census_test(test_cancel_from_another_thread_ends_wait),
		census_test(test_go_after_cancel_returns_ecanceled_also_after_wait),
		census_test(test_cancel_on_error_is_final_after_wait),
		census_test(test_uncanceled_group_is_reusable_and_its_first_error_sticky),
		census_test(test_canceled_task_grandchild_dies_too),
		census_test(test_canceled_task_leftovers_die_of_sigkill_once_the_leader_is_reaped),
		census_test(test_child_failing_on_its_own_after_the_signal_is_canceled_with_its_code),
		census_test(test_task_that_failed_before_the_cancel_keeps_its_own_error),
		census_test(test_leftovers_of_a_task_that_succeeded_die_of_sigkill_at_its_reap),
		census_test(test_free_kills_a_task_that_left_its_process_group),
		census_test(test_cancel_stops_a_task_that_left_its_process_group),
		census_test(test_cancel_sends_a_task_in_its_group_one_sigterm),
		census_test(test_signal_suspends_and_resumes_a_task_with_what_it_started),
		census_test(test_signal_is_passed_on_and_is_no_cancellation),
		census_test(test_signal_leaves_out_ended_tasks_and_refuses_non_signals),
	};

	census_begin();
	return cmocka_run_group_tests(tests, setup_count_forks, NULL);
}
