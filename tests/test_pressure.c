/*
 * test_pressure.c - the group when the system says no: fds running out,
 * fork and the other calls of errgroup_go failing, a task's pid reused by
 * a stranger, and thousands of children at once.
 *
 * Failures are injected two ways.  A lowered RLIMIT_NOFILE makes the
 * library's own pipe fail with EMFILE, in this process.  Any other failure
 * comes from a seccomp filter that makes one system call fail with a
 * chosen errno, or from a wrapper; a filter can never be removed, so each of those scenarios
 * runs in a bare fork of the test, which sends back what it saw through a
 * pipe, and only the test asserts.  The filter applies to the thread that
 * installs it: a thread started before it still forks, so the scenario
 * can check that the group goes on afterwards.  Memory and threads
 * running out in the parent come from malloc and pthread_create, wrapped
 * (see the Makefile): the library's calls to them fail while the test
 * says so.
 */
#include "helpers.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>

static uint64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits until fd is readable (a pidfd: its process has exited); false
 * after WAIT_LIMIT_MS. */
static bool await_readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int r;

	do
		r = poll(&p, 1, WAIT_LIMIT_MS);
	while (r < 0 && errno == EINTR);
	return r == 1;
}

/* ---- tasks ---- */

static int gate[2];

/* Says it runs, then waits for the test to open the gate. */
static int report_and_wait_at_gate(void *arg)
{
	(void)arg;
	tell_word(getpid());
	return read_byte(gate[0]) < 0 ? 99 : 0;
}

static int succeed(void *arg)
{
	(void)arg;
	return 0;
}

/* A command that must never start. */
static const char *const phantom_argv[] = { "/bin/true", NULL };
static const struct errgroup_cmd phantom_command = { .argv = phantom_argv };

/* A task that must never run: it would count itself. */
static int *phantom_runs;

static int count_phantom(void *arg)
{
	(void)arg;
	__atomic_add_fetch(phantom_runs, 1, __ATOMIC_SEQ_CST);
	return 0;
}

/* ---- fds run out ---- */

static void set_soft_fd_limit(rlim_t soft)
{
	struct rlimit rl;

	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	rl.rlim_cur = soft;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

/*
 * One fd number free: the lifeline pipe needs two.  One slot is also what
 * open_fd_count's own directory needs, so the count can be taken there.
 * The group has a limit of 2, so a slot that a failed go() kept would
 * make the try_go afterwards fail with EAGAIN.
 */
static void test_go_returns_emfile_when_fds_run_out_and_the_group_goes_on(void **state)
{
	struct rlimit saved;
	int fds_before, fds_running, r_go, r_try_go, fds_after_failures;
	errgroup *g;

	(void)state;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
	phantom_runs = shared_alloc(sizeof *phantom_runs);
	ready_pipe_open();
	assert_int_equal(pipe2(gate, O_CLOEXEC), 0);
	fds_before = open_fd_count();
	g = errgroup_new();
	assert_non_null(g);
	assert_int_equal(errgroup_set_limit(g, 2), 0);
	assert_int_equal(errgroup_go(g, report_and_wait_at_gate, NULL), 0);
	await_word();
	fds_running = open_fd_count();

	set_soft_fd_limit(limit_leaving_free_fds(1));
	r_go = errgroup_go(g, count_phantom, NULL);
	r_try_go = errgroup_try_go(g, count_phantom, NULL);
	fds_after_failures = open_fd_count();
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);

	assert_int_equal(r_go, -EMFILE);
	assert_int_equal(r_try_go, -EMFILE);
	assert_int_equal(fds_after_failures, fds_running);
	/* The slot came back, and no index was used up. */
	assert_int_equal(errgroup_try_go(g, succeed, NULL), 1);
	gate_open_n(gate[1], 1);
	assert_null(errgroup_wait(g));
	assert_int_equal(errgroup_error_count(g), 0);
	assert_int_equal(errgroup_go(g, succeed, NULL), 2);
	assert_null(errgroup_wait(g));
	assert_int_equal(*phantom_runs, 0);
	assert_true(no_children_left());
	errgroup_free(g);
	assert_int_equal(open_fd_count(), fds_before);

	close(gate[0]);
	close(gate[1]);
	ready_pipe_close();
	shared_free(phantom_runs, sizeof *phantom_runs);
}

/* A group needs four fds (epoll, eventfd, the channel's two ends): with
 * fewer free, each of its creation steps fails in turn and undoes the
 * ones before.  Valgrind applies its own copy of the limit, and not to
 * socketpair. */
static void test_new_fails_with_emfile_and_leaks_nothing(void **state)
{
	struct rlimit saved;
	int fds_before, fds_after[4], errors[4];
	errgroup *groups[4];

	(void)state;
	if (under_valgrind())
		skip();
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
	/* open_fd_count needs a slot of its own: counted with it free. */
	fds_before = open_fd_count();
	for (int free_slots = 0; free_slots < 4; free_slots++) {
		set_soft_fd_limit(limit_leaving_free_fds(free_slots));
		errno = 0;
		groups[free_slots] = errgroup_new();
		errors[free_slots] = errno;
		assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
		fds_after[free_slots] = open_fd_count();
	}
	for (int free_slots = 0; free_slots < 4; free_slots++) {
		assert_null(groups[free_slots]);
		assert_int_equal(errors[free_slots], EMFILE);
		assert_int_equal(fds_after[free_slots], fds_before);
	}
}

/* ---- a system call of errgroup_go fails (seccomp) ---- */

#if defined(__x86_64__)
#define FILTER_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define FILTER_ARCH AUDIT_ARCH_AARCH64
#endif

/* The call that fails: nr, when (args[arg] & mask) == value (mask 0:
 * always), with errno error; commands_too when starting a command makes
 * that call as well. */
struct fault {
	long nr;
	int arg;
	uint32_t mask, value;
	int error;
	bool commands_too;
};

#ifdef FILTER_ARCH
/*
 * Installs the fault on the calling thread only.  clone3 answers ENOSYS,
 * so that glibc falls back to clone, which the filter can judge by its
 * flags (clone3 passes them in memory).  Reads the low 32 bits of the
 * argument: the arches above are little-endian.
 */
static int install_fault(const struct fault *f)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, FILTER_ARCH, 0, 6),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 5, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)f->nr, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, args) + 8 * (uint32_t)f->arg),
		BPF_STMT(BPF_ALU | BPF_AND | BPF_K, f->mask),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, f->value, 2, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (uint32_t)f->error),
	};
	struct sock_fprog prog = { .len = sizeof filter / sizeof filter[0], .filter = filter };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		return -errno;
	return 0;
}
#else
static int install_fault(const struct fault *f)
{
	(void)f;
	return -ENOTSUP;
}
#endif

/* Valgrind turns a command's clone into a fork of its own, and the
 * process crashes (SIGSEGV) when that fork fails. */
static bool commands_checked(const struct fault *f)
{
	return f->commands_too && !under_valgrind();
}

/* What the scenario saw; the test asserts on it. */
struct injection_report {
	int filter;                 /* 0, or -errno: the filter could not be set */
	int first_index;            /* go() before the filter */
	int failed_go, failed_try_go, failed_go_cmd;
	int fds_running, fds_after_failures;
	bool zombie_after_failures;
	int children_after_failures;
	int helper_index;           /* try_go from a thread outside the filter */
	bool waited_null;
	int error_count;
	int phantom_runs;
	int fds_before, fds_after;
	bool children_left;
};

/* The thread that the filter does not cover: started before it, it
 * starts a task once told to. */
struct helper {
	errgroup *g;
	int command[2];
	int index;
};

static void *start_a_task_when_told(void *arg)
{
	struct helper *h = arg;

	h->index = read_byte(h->command[0]) < 0 ? -EPIPE : errgroup_try_go(h->g, succeed, NULL);
	return NULL;
}

static bool has_zombie(void)
{
	siginfo_t si;

	memset(&si, 0, sizeof si);
	return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid != 0;
}

/* In the bare child: the whole scenario, no assert.  The group has a
 * limit of 2, so a slot kept by a failed start would show as EAGAIN in
 * the helper's try_go. */
static void run_injection(const struct fault *f, struct injection_report *rep)
{
	struct pollfd ready = { .fd = ready_pipe[0], .events = POLLIN };
	struct helper h = { .index = -1 };
	pthread_t helper;
	errgroup *g;
	int word;

	rep->fds_before = open_fd_count();
	g = errgroup_new();
	if (!g || errgroup_set_limit(g, 2) < 0 || pipe2(h.command, O_CLOEXEC) < 0)
		return;
	h.g = g;
	rep->first_index = errgroup_go(g, report_and_wait_at_gate, NULL);
	if (rep->first_index != 0 || poll(&ready, 1, WAIT_LIMIT_MS) != 1 ||
	    read(ready_pipe[0], &word, sizeof word) != sizeof word)
		return;
	rep->fds_running = open_fd_count();
	if (pthread_create(&helper, NULL, start_a_task_when_told, &h) != 0)
		return;

	rep->filter = install_fault(f);
	if (rep->filter == 0) {
		rep->failed_go = errgroup_go(g, count_phantom, NULL);
		rep->failed_try_go = errgroup_try_go(g, count_phantom, NULL);
		if (commands_checked(f))
			rep->failed_go_cmd = errgroup_go_cmd(g, &phantom_command);
		rep->fds_after_failures = open_fd_count();
		rep->zombie_after_failures = has_zombie();
		rep->children_after_failures = count_live_children();
	}
	gate_open_n(h.command[1], 1);
	pthread_join(helper, NULL);
	rep->helper_index = h.index;

	gate_open_n(gate[1], 1);
	rep->waited_null = errgroup_wait(g) == NULL;
	rep->error_count = (int)errgroup_error_count(g);
	rep->phantom_runs = __atomic_load_n(phantom_runs, __ATOMIC_SEQ_CST);
	errgroup_free(g);
	close(h.command[0]);
	close(h.command[1]);
	rep->fds_after = open_fd_count();
	rep->children_left = !no_children_left();
}

/* Runs the scenario in a bare fork and returns its report. */
static void run_injected(const struct fault *f, struct injection_report *rep)
{
	int report[2], status;
	ssize_t n;
	pid_t pid;

	phantom_runs = shared_alloc(sizeof *phantom_runs);
	ready_pipe_open();
	assert_int_equal(pipe2(gate, O_CLOEXEC), 0);
	assert_int_equal(pipe2(report, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		memset(rep, 0, sizeof *rep);
		rep->filter = -ECANCELED;   /* never installed: the scenario stopped early */
		run_injection(f, rep);
		_exit(write(report[1], rep, sizeof *rep) == sizeof *rep ? 0 : 1);
	}
	close(report[1]);
	/* A scenario stuck in the library (a wait that never ends) is
	 * stopped, so that the test fails rather than hangs. */
	n = await_readable(report[0]) ? read(report[0], rep, sizeof *rep) : -1;
	if (n != sizeof *rep)
		kill(pid, SIGKILL);
	close(report[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(n, sizeof *rep);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(gate[0]);
	close(gate[1]);
	ready_pipe_close();
	shared_free(phantom_runs, sizeof *phantom_runs);
}

static void check_injected(const struct fault *f)
{
	struct injection_report rep;

	run_injected(f, &rep);
	if (rep.filter != 0 && under_valgrind())
		skip();   /* valgrind may not pass seccomp filters on */
	assert_int_equal(rep.filter, 0);
	assert_int_equal(rep.first_index, 0);
	assert_int_equal(rep.failed_go, -f->error);
	assert_int_equal(rep.failed_try_go, -f->error);
	if (commands_checked(f))
		assert_int_equal(rep.failed_go_cmd, -f->error);
	/* Nothing leaked: no fd, and only the running task is a child (a
	 * child forked before the failure was killed and reaped). */
	assert_int_equal(rep.fds_after_failures, rep.fds_running);
	assert_false(rep.zombie_after_failures);
	assert_int_equal(rep.children_after_failures, 1);
	/* The group goes on: the slot came back, no index was used up, the
	 * running task was unaffected, nothing phantom was recorded. */
	assert_int_equal(rep.helper_index, 1);
	assert_true(rep.waited_null);
	assert_int_equal(rep.error_count, 0);
	assert_int_equal(rep.phantom_runs, 0);
	assert_int_equal(rep.fds_after, rep.fds_before);
	assert_false(rep.children_left);
}

/* glibc's fork() is clone without CLONE_THREAD, and so is the clone that
 * starts a command; pthread_create's has it. */
static void test_go_returns_eagain_when_fork_fails(void **state)
{
	const struct fault f = { __NR_clone, 0, CLONE_THREAD, 0, EAGAIN, true };

	(void)state;
	check_injected(&f);
}

static void test_go_returns_enomem_when_fork_fails(void **state)
{
	const struct fault f = { __NR_clone, 0, CLONE_THREAD, 0, ENOMEM, true };

	(void)state;
	check_injected(&f);
}

/* The lifeline pipe, the first call a start makes. */
static void test_go_returns_enfile_when_the_system_is_out_of_files(void **state)
{
	const struct fault f = { __NR_pipe2, 0, 0, 0, ENFILE, true };

	(void)state;
	check_injected(&f);
}

/* After the fork: the child exists and must be killed and reaped.  A
 * command gets its pidfd from clone itself. */
static void test_go_returns_emfile_when_pidfd_open_fails_after_the_fork(void **state)
{
	const struct fault f = { __NR_pidfd_open, 0, 0, 0, EMFILE, false };

	(void)state;
	if (!pidfds_in_use())
		skip();   /* the fallback never opens a pidfd */
	check_injected(&f);
}

/* Last: the child exists and the index was taken; both must be undone. */
static void test_go_returns_enomem_when_the_exit_cannot_be_watched(void **state)
{
	const struct fault f = { __NR_epoll_ctl, 1, UINT32_MAX, EPOLL_CTL_ADD, ENOMEM, true };

	(void)state;
	check_injected(&f);
}

/* ---- memory runs out ---- */

static bool fail_large_mallocs;
static int failed_mallocs;

void *__real_malloc(size_t size);
void *__wrap_malloc(size_t size);

void *__wrap_malloc(size_t size)
{
	if (fail_large_mallocs && size > 1024) {
		failed_mallocs++;
		errno = ENOMEM;
		return NULL;
	}
	return __real_malloc(size);
}

static int fail_with_a_long_message(void *arg)
{
	(void)arg;
	return errgroup_errorf(300, "%2000s", "no room for this");
}

/*
 * The parent has no memory for a task's long message: the message is
 * lost, not the frame with the task's code behind it.  The datagram that
 * could not be read stayed queued: the code was taken for an exit status
 * (EXITED, 44), and the channel, readable for ever, kept the poller
 * spinning, a failed allocation per round.
 */
static void test_code_arrives_when_the_parent_has_no_memory_for_the_message(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	assert_int_equal(errgroup_go(g, fail_with_a_long_message, NULL), 0);
	failed_mallocs = 0;
	fail_large_mallocs = true;
	e = errgroup_wait(g);
	fail_large_mallocs = false;
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_RETURNED);
	assert_int_equal(e->code, 300);
	assert_null(strstr(e->message, "no room"));
	assert_int_equal(failed_mallocs, 1);
	errgroup_free(g);
}

/* ---- no thread to be had ---- */

static int refuse_threads;   /* the error pthread_create gives, or 0 */

int __real_pthread_create(pthread_t *thread, const pthread_attr_t *attr,
			  void *(*start)(void *), void *arg);
int __wrap_pthread_create(pthread_t *thread, const pthread_attr_t *attr,
			  void *(*start)(void *), void *arg);

int __wrap_pthread_create(pthread_t *thread, const pthread_attr_t *attr,
			  void *(*start)(void *), void *arg)
{
	if (refuse_threads)
		return refuse_threads;
	return __real_pthread_create(thread, attr, start, arg);
}

static int ignore_sigterm_and_wait_at_gate(void *arg)
{
	(void)arg;
	signal(SIGTERM, SIG_IGN);
	tell_word(getpid());
	return read_byte(gate[0]) < 0 ? 99 : 0;
}

/*
 * errgroup_cancel starts a thread to time the grace period before the
 * SIGKILL.  Without one, the SIGKILL comes at once: it waited for the
 * caller's next errgroup_wait, and a task that ignores SIGTERM ran on
 * meanwhile, however long the caller stayed away.  The grace is longer
 * than the test waits.
 */
static void test_cancel_kills_at_once_when_no_thread_can_time_the_grace(void **state)
{
	const struct errgroup_error *e;
	errgroup *g;
	pid_t pid;

	(void)state;
	ready_pipe_open();
	assert_int_equal(pipe2(gate, O_CLOEXEC), 0);
	g = errgroup_new();
	assert_non_null(g);
	assert_int_equal(errgroup_set_grace_ms(g, 4 * WAIT_LIMIT_MS), 0);
	assert_int_equal(errgroup_go(g, ignore_sigterm_and_wait_at_gate, NULL), 0);
	pid = await_word();
	refuse_threads = EAGAIN;
	errgroup_cancel(g);
	refuse_threads = 0;
	assert_true(ends_in_time(pid));
	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_CANCELED);
	assert_int_equal(e->code, SIGKILL);
	errgroup_free(g);
	close(gate[0]);
	close(gate[1]);
	ready_pipe_close();
}

/*
 * pthread_create's other errors say "no thread" as well: EINVAL in a
 * process that entered a new pid namespace with unshare, EPERM under some
 * seccomp filters.  The header promises -EAGAIN for it; they came through
 * as they were, and errgroup_go's -EINVAL read as "fn is NULL".
 */
static void test_no_thread_is_eagain_whatever_pthread_create_says(void **state)
{
	const int errors[] = { EAGAIN, EINVAL, EPERM };

	(void)state;
	for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++) {
		errgroup *g = errgroup_new();

		assert_non_null(g);
		assert_int_equal(errgroup_set_cancel_on_error(g, true), 0);
		refuse_threads = errors[i];
		assert_int_equal(errgroup_go(g, succeed, NULL), -EAGAIN);
		assert_int_equal(errgroup_fd(g), -EAGAIN);
		refuse_threads = 0;
		assert_int_equal(errgroup_go(g, succeed, NULL), 0);
		assert_null(errgroup_wait(g));
		errgroup_free(g);
	}
}

/* ---- no pid-reuse accident ---- */

#define REUSE_FORK_CAP 100000

/* Signals the stranger saw, as a bit mask; it answers each ping with it. */
static volatile sig_atomic_t stranger_signals;

static void note_signal(int sig)
{
	stranger_signals |= 1 << sig;
}

/* The process that got the old task's pid: it leads a process group of
 * that number, as the task did, and reports any signal it receives. */
static _Noreturn void be_stranger(int ping_fd, int answer_fd)
{
	static const int watched[] = { SIGTERM, SIGCONT, SIGINT, SIGHUP, SIGUSR1, SIGUSR2 };
	struct sigaction sa;
	int mask;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = note_signal;
	sa.sa_flags = SA_RESTART;
	for (size_t i = 0; i < sizeof watched / sizeof watched[0]; i++)
		sigaction(watched[i], &sa, NULL);
	setpgid(0, 0);
	for (;;) {
		mask = stranger_signals;
		if (write(answer_fd, &mask, sizeof mask) != sizeof mask || read_byte(ping_fd) < 0)
			_exit(0);
	}
}

/* Forks bare children, each gone at once, until one gets target's pid,
 * which becomes the stranger.  0 if the pid never came back. */
static pid_t fork_until_pid(pid_t target, int ping_fd, int answer_fd, int *ret_forks)
{
	for (int i = 0; i < REUSE_FORK_CAP; i++) {
		pid_t pid = fork();

		if (pid == 0) {
			if (getpid() == target)
				be_stranger(ping_fd, answer_fd);
			_exit(0);
		}
		*ret_forks = i + 1;
		if (pid < 0 || pid == target)
			return pid;
	}
	return 0;
}

/* SIGCHLD back as it was.  A bare child that had not quite exited by
 * then stays a zombie: they are all reaped here, once the group has no
 * child left. */
static void restore_sigchld(const struct sigaction *saved)
{
	siginfo_t si;
	int r;

	assert_int_equal(sigaction(SIGCHLD, saved, NULL), 0);
	do
		r = waitid(P_ALL, 0, &si, WEXITED);
	while (r == 0 || errno == EINTR);
	assert_int_equal(errno, ECHILD);
}

static int await_answer(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int mask = -1;

	if (poll(&p, 1, WAIT_LIMIT_MS) != 1 || read(fd, &mask, sizeof mask) != sizeof mask)
		return -1;
	return mask;
}

/*
 * SIGCHLD ignored: the kernel reaps the task the moment it exits, without
 * the group noticing, and so every bare child here too.  The pid comes
 * back after about pid_max forks.  Only with pidfds: without them the
 * group signals by pid, and this accident is documented as out of reach.
 */
static void test_canceling_a_task_reaped_by_the_kernel_spares_the_stranger_with_its_pid(void **state)
{
	struct sigaction ignore = { .sa_handler = SIG_IGN }, saved;
	int ping[2], answer[2], task_pidfd, stranger_pidfd, forks = 0, ready_mask, mask_after;
	const struct errgroup_error *e;
	pid_t task_pid, stranger;
	uint64_t start_ms;
	errgroup *g;

	(void)state;
	if (!pidfds_in_use())
		skip();
	ready_pipe_open();
	assert_int_equal(pipe2(gate, O_CLOEXEC), 0);
	assert_int_equal(pipe2(ping, O_CLOEXEC), 0);
	assert_int_equal(pipe2(answer, O_CLOEXEC), 0);
	assert_int_equal(sigaction(SIGCHLD, &ignore, &saved), 0);
	g = errgroup_new();
	assert_non_null(g);
	assert_int_equal(errgroup_go(g, report_and_wait_at_gate, NULL), 0);
	task_pid = await_word();
	task_pidfd = pidfd_open(task_pid, 0);
	assert_true(task_pidfd >= 0);
	gate_open_n(gate[1], 1);
	assert_true(await_readable(task_pidfd));
	close(task_pidfd);

	start_ms = monotonic_ms();
	stranger = fork_until_pid(task_pid, ping[0], answer[1], &forks);
	print_message("pid %d came back after %d forks, %llu ms\n", (int)task_pid, forks,
		      (unsigned long long)(monotonic_ms() - start_ms));
	assert_true(stranger >= 0);
	if (stranger == 0) {
		/* Another process took it first: nothing to prove here. */
		errgroup_free(g);
		restore_sigchld(&saved);
		skip();
	}
	stranger_pidfd = pidfd_open(stranger, 0);
	assert_true(stranger_pidfd >= 0);
	/* Its process group exists before the cancel. */
	ready_mask = await_answer(answer[0]);

	errgroup_cancel(g);
	e = errgroup_wait(g);
	gate_open_n(ping[1], 1);
	mask_after = await_answer(answer[0]);

	pidfd_send_signal(stranger_pidfd, SIGKILL, NULL, 0);
	assert_true(await_readable(stranger_pidfd));
	close(stranger_pidfd);
	restore_sigchld(&saved);

	assert_int_equal(ready_mask, 0);
	/* Alive, answering, and it received no signal at all. */
	assert_int_equal(mask_after, 0);
	/* The task exited 0; the kernel kept its status for the pidfd
	 * (Linux 6.15).  An older kernel reports it lost, never a success. */
	if (e) {
		assert_int_equal(e->cause, ERRGROUP_CANCELED);
		assert_int_equal(e->code, -1);
	}
	errgroup_free(g);
	assert_true(no_children_left());
	close(ping[0]);
	close(ping[1]);
	close(answer[0]);
	close(answer[1]);
	close(gate[0]);
	close(gate[1]);
	ready_pipe_close();
}

/* ---- thousands of children ---- */

#define MANY_TASKS 5000
#define MANY_TASKS_UNDER_VALGRIND 200
#define MANY_TASKS_UNDER_SANITIZER 200

struct many_counts {
	int started, finished;
};

static struct many_counts *many_counts;

static int count_and_wait_at_gate(void *arg)
{
	(void)arg;
	__atomic_add_fetch(&many_counts->started, 1, __ATOMIC_SEQ_CST);
	tell_word(1);
	if (read_byte(gate[0]) < 0)
		return 99;
	__atomic_add_fetch(&many_counts->finished, 1, __ATOMIC_SEQ_CST);
	return 0;
}

/* All running at once: each has said it started before any is let go. */
static void test_five_thousand_children_run_at_once(void **state)
{
	int n = MANY_TASKS, fds_before, fds_running;
	struct rlimit saved, raised;
	uint64_t start_ms;
	errgroup *g;

	(void)state;
	/* Their forks take ten times as long, and a child of a TSan build
	 * holds some 17 MiB of its own: 5 000 would exhaust the memory. */
	if (under_valgrind())
		n = MANY_TASKS_UNDER_VALGRIND;
	else if (under_sanitizer())
		n = MANY_TASKS_UNDER_SANITIZER;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
	fds_before = open_fd_count();
	/* A running task costs the parent at most two fds. */
	if (saved.rlim_max != RLIM_INFINITY && saved.rlim_max < (rlim_t)(fds_before + 2 * n + 16)) {
		print_message("hard RLIMIT_NOFILE %llu is too low for %d children\n",
			      (unsigned long long)saved.rlim_max, n);
		skip();
	}
	raised = saved;
	raised.rlim_cur = saved.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &raised), 0);
	many_counts = shared_alloc(sizeof *many_counts);
	ready_pipe_open();
	assert_int_equal(pipe2(gate, O_CLOEXEC), 0);
	fds_before = open_fd_count();
	g = errgroup_new();
	assert_non_null(g);

	start_ms = monotonic_ms();
	for (int i = 0; i < n; i++)
		assert_int_equal(errgroup_go(g, count_and_wait_at_gate, NULL), i);
	for (int i = 0; i < n; i++)
		assert_int_equal(await_word(), 1);
	print_message("%d children started in %llu ms\n", n,
		      (unsigned long long)(monotonic_ms() - start_ms));
	assert_int_equal(many_counts->started, n);
	fds_running = open_fd_count();
	assert_true(fds_running <= fds_before + 4 + 2 * n);

	gate_open_n(gate[1], n);
	assert_null(errgroup_wait(g));
	assert_int_equal(many_counts->finished, n);
	assert_true(no_children_left());
	errgroup_free(g);
	assert_int_equal(open_fd_count(), fds_before);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);

	close(gate[0]);
	close(gate[1]);
	ready_pipe_close();
	shared_free(many_counts, sizeof *many_counts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		census_test(test_go_returns_emfile_when_fds_run_out_and_the_group_goes_on),
		census_test(test_new_fails_with_emfile_and_leaks_nothing),
		census_test(test_go_returns_eagain_when_fork_fails),
		census_test(test_go_returns_enomem_when_fork_fails),
		census_test(test_go_returns_enfile_when_the_system_is_out_of_files),
		census_test(test_go_returns_emfile_when_pidfd_open_fails_after_the_fork),
		census_test(test_go_returns_enomem_when_the_exit_cannot_be_watched),
		census_test(test_code_arrives_when_the_parent_has_no_memory_for_the_message),
		census_test(test_cancel_kills_at_once_when_no_thread_can_time_the_grace),
		census_test(test_no_thread_is_eagain_whatever_pthread_create_says),
		census_test(test_canceling_a_task_reaped_by_the_kernel_spares_the_stranger_with_its_pid),
		census_test(test_five_thousand_children_run_at_once),
	};

	census_begin();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
