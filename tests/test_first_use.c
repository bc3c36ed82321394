/*
 * test_first_use.c - the process's first group, made in one thread while
 * another forks: the fork must see each of the group's fds either
 * registered (and close it in the child) or not yet made.  And the
 * process's first start, which probes for pidfds (at the end): in a
 * moment another thread forks, and when fds run out.  And the first
 * group's memory, whose first mapping asks whether the kernel wipes it at
 * a fork, when mappings fail (mmap wrapped: see the Makefile).
 *
 * Until its first use the library has no registry and no atfork handlers;
 * the first use installs the handlers and makes the registry, and a fork
 * in between found no registry to lock while the other thread registered
 * its first fds (fdreg.c: prepare now makes the registry if there is
 * none).  So each round must be a process that has never used the
 * library: this test runs alone in its binary, before anything else, and
 * forks one such process per round.  In it, one thread makes a group
 * while the other forks children that look for library fds.  The race is
 * narrow: it took a few hundred rounds to meet it.
 */
#include "helpers.h"

#include <pthread.h>
#include <stdatomic.h>

#include "internal.h"   /* pidfd_supported, parentmem_wipes */

#define ROUNDS 500

static atomic_int group_made;

static void *make_first_group(void *arg)
{
	*(errgroup **)arg = errgroup_new();
	atomic_store(&group_made, 1);
	return NULL;
}

/* The library's fds are the only sockets, epoll fds and eventfds here. */
static bool holds_library_fd(void)
{
	DIR *d = opendir("/proc/self/fd");
	char target[256];
	struct dirent *e;
	bool found = false;

	if (!d)
		return true;
	while ((e = readdir(d))) {
		ssize_t n = readlinkat(dirfd(d), e->d_name, target, sizeof target - 1);

		if (n <= 0)
			continue;
		target[n] = '\0';
		if (strstr(target, "socket:") || strstr(target, "eventpoll") ||
		    strstr(target, "eventfd"))
			found = true;
	}
	closedir(d);
	return found;
}

/* One round, in a process that has never used the library: 0, or 1 if
 * a child held a library fd. */
static int fork_while_the_first_group_is_made(void)
{
	errgroup *g = NULL;
	pthread_t maker;
	int leaked = 0;

	if (pthread_create(&maker, NULL, make_first_group, &g) != 0)
		return 2;
	while (!atomic_load(&group_made)) {
		int status;
		pid_t pid = fork();

		/* Not _exit: under TSan it reports the maker thread, which the
		 * child does not have, as leaked, and exits 66. */
		if (pid == 0)
			syscall(SYS_exit_group, holds_library_fd());
		if (pid < 0 || waitpid(pid, &status, 0) != pid)
			return 3;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			leaked = 1;
	}
	pthread_join(maker, NULL);
	errgroup_free(g);
	return leaked;
}

static void test_fork_while_the_first_group_is_made_leaks_no_fd(void **state)
{
	int leaks = 0, rounds = under_valgrind() || under_sanitizer() ? ROUNDS / 10 : ROUNDS;

	(void)state;
	for (int i = 0; i < rounds; i++) {
		int status;
		pid_t pid = fork();

		if (pid == 0)
			_exit(fork_while_the_first_group_is_made());
		assert_true(pid > 0);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		assert_true(WEXITSTATUS(status) <= 1);
		leaks += WEXITSTATUS(status);
	}
	if (leaks)
		print_error("%d of %d rounds: a child held a library fd\n", leaks, rounds);
	assert_int_equal(leaks, 0);
}

/* ---- the pidfd probe ---- */

/*
 * The process's first start asks the kernel, once, whether pidfds work:
 * it opens a pidfd of its own process and signals it.  A task that
 * another thread forked meanwhile inherited that pidfd, which no registry
 * listed: a library fd in the task, and one that can signal the host.
 * The test holds the probe at its signal (the library's first
 * pidfd_send_signal, wrapped: see the Makefile) until a go() in another
 * thread has forked; that task reports any pidfd it holds.
 */
static int probe_go[2], probe_forked[2];
static pthread_t prober;
static bool hold_probe;

/* In the child process, where only the test's parent asserts. */
static void send_byte(int fd, char c)
{
	if (write(fd, &c, 1) != 1)
		_exit(5);
}

int __real_pidfd_send_signal(int fd, int sig, siginfo_t *info, unsigned int flags);
int __wrap_pidfd_send_signal(int fd, int sig, siginfo_t *info, unsigned int flags);

int __wrap_pidfd_send_signal(int fd, int sig, siginfo_t *info, unsigned int flags)
{
	if (hold_probe && sig == 0 && pthread_equal(pthread_self(), prober)) {
		hold_probe = false;
		send_byte(probe_go[1], 'g');
		if (read_byte(probe_forked[0]) < 0)
			_exit(4);
	}
	return __real_pidfd_send_signal(fd, sig, info, flags);
}

static void note_fork(void)
{
	if (!pthread_equal(pthread_self(), prober))
		send_byte(probe_forked[1], 'f');
}

static int report_pidfds(void *arg)
{
	DIR *d = opendir("/proc/self/fd");
	char target[256];
	struct dirent *e;
	int found = 0;

	(void)arg;
	if (!d)
		return 2;
	while ((e = readdir(d))) {
		ssize_t n = readlinkat(dirfd(d), e->d_name, target, sizeof target - 1);

		if (n <= 0)
			continue;
		target[n] = '\0';
		if (strstr(target, "pidfd"))
			found = 1;
	}
	closedir(d);
	return found;
}

static void *go_when_told(void *arg)
{
	if (read_byte(probe_go[0]) == 'g')
		errgroup_go(arg, report_pidfds, NULL);
	return NULL;
}

/* In a process that has never started a task: 0, 1 if the other thread's
 * task held a pidfd, SKIP_STATUS if the library did not probe (no
 * pidfds). */
static int fork_while_the_probe_holds_its_pidfd(void)
{
	errgroup *prober_group = errgroup_new(), *group = errgroup_new();
	const struct errgroup_error *e;
	pthread_t thread;
	int held;

	if (!prober_group || !group || pipe2(probe_go, O_CLOEXEC) < 0 ||
	    pipe2(probe_forked, O_CLOEXEC) < 0 || pthread_atfork(NULL, note_fork, NULL) != 0 ||
	    pthread_create(&thread, NULL, go_when_told, group) != 0)
		return 3;
	prober = pthread_self();
	hold_probe = true;
	errgroup_go(prober_group, report_pidfds, NULL);
	held = !hold_probe;
	if (!held)
		send_byte(probe_go[1], 'x');   /* nothing to do */
	pthread_join(thread, NULL);
	errgroup_wait(prober_group);
	e = errgroup_wait(group);
	if (!held)
		return SKIP_STATUS;
	return e ? 1 : 0;
}

static void test_task_started_during_the_pidfd_probe_holds_no_pidfd(void **state)
{
	(void)state;
	assert_int_equal(status_in_child(fork_while_the_probe_holds_its_pidfd), 0);
}

static int succeed(void *arg)
{
	(void)arg;
	return 0;
}

static const char *const true_argv[] = { "/bin/true", NULL };
static const struct errgroup_cmd true_command = { .argv = true_argv };

/* A start (a function, or the command if cmd) with the soft fd limit set
 * so that free_slots numbers are free, then the limit as it was. */
static int start_with_free_fds(errgroup *g, bool cmd, int free_slots)
{
	struct rlimit saved, low;
	int r;

	if (getrlimit(RLIMIT_NOFILE, &saved) < 0)
		return 100;
	low = saved;
	low.rlim_cur = limit_leaving_free_fds(free_slots);
	if (setrlimit(RLIMIT_NOFILE, &low) < 0)
		return 101;
	r = cmd ? errgroup_go_cmd(g, &true_command) : errgroup_go(g, succeed, NULL);
	if (setrlimit(RLIMIT_NOFILE, &saved) < 0)
		return 102;
	return r;
}

/*
 * In a process that has never started a task: 0 if the starts that ran
 * out of fds failed with EMFILE and left the question of pidfds open,
 * else the step that went wrong.  With no fd free the probe finds none.
 * A command's start needs four for its two pipes, then one for its pidfd:
 * with four free, the probe made with the pipes open found none, took
 * that EMFILE for "no pidfds" and kept the answer, and the command, and
 * every later task of the process, ran without a pidfd.
 */
static int run_out_of_fds_at_the_probe(void)
{
	errgroup *g = errgroup_new();
	bool pidfds = pidfds_in_use();

	if (!g)
		return 3;
	if (start_with_free_fds(g, false, 0) != -EMFILE)
		return 10;
	if (start_with_free_fds(g, true, 4) != (pidfds ? -EMFILE : 0))
		return 11;
	if (errgroup_go(g, succeed, NULL) != (pidfds ? 0 : 1))
		return 12;
	if (errgroup_wait(g))
		return 13;
	if (pidfd_supported() != pidfds)
		return 14;
	errgroup_free(g);
	return 0;
}

static void test_probe_that_runs_out_of_fds_fails_the_start_and_decides_nothing(void **state)
{
	(void)state;
	assert_int_equal(status_in_child(run_out_of_fds_at_the_probe), 0);
}

/* ---- the first group's memory ---- */

static bool refuse_mappings;

void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t offset);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t offset);

void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t offset)
{
	if (refuse_mappings) {
		errno = ENOMEM;
		return MAP_FAILED;
	}
	return __real_mmap(addr, len, prot, flags, fd, offset);
}

/* Whether the kernel wipes MADV_WIPEONFORK memory at a fork, and the
 * runner did not turn it off. */
static bool wipes_expected(void)
{
	const char *off = getenv("ERRGROUP_DISABLE_WIPEONFORK");
	size_t size = (size_t)sysconf(_SC_PAGESIZE);
	void *p;
	bool wipes;

	if (off && *off && strcmp(off, "0") != 0)
		return false;
	p = __real_mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return false;
	wipes = madvise(p, size, MADV_WIPEONFORK) == 0;
	munmap(p, size);
	return wipes;
}

/*
 * In a process that has never used the library: 0 if a first group that
 * got no memory decided nothing, else the step that went wrong.  The
 * first mapping also asks the kernel whether it wipes such memory; when
 * it failed, the answer was taken for "no" and kept, and the process ran
 * in the slower mode, the one for old kernels, for its life.
 */
static int run_out_of_memory_at_the_first_group(void)
{
	errgroup *g;

	refuse_mappings = true;
	g = errgroup_new();
	refuse_mappings = false;
	if (g)
		return 10;
	g = errgroup_new();
	if (!g)
		return 11;
	if (parentmem_wipes() != wipes_expected())
		return 12;
	errgroup_free(g);
	return 0;
}

static void test_first_group_without_memory_decides_nothing(void **state)
{
	(void)state;
	assert_int_equal(status_in_child(run_out_of_memory_at_the_first_group), 0);
}

/*
 * Two threads make the process's first groups at once.  Each asks the
 * kernel whether it wipes, and here they hear different answers: A's
 * advice is held until B has its group, and B's is refused (as a sandbox
 * would).  The first answer stored must be everyone's.  The last one was:
 * A's "yes" came after B had made its group in ordinary memory, and a
 * child then took that group for its own (its zeroes were expected) and
 * used it, instead of refusing it with -ECHILD.
 */
static int madvise_calls, a_in_probe[2], b_done[2];
static bool hold_advice;

int __real_madvise(void *addr, size_t len, int advice);
int __wrap_madvise(void *addr, size_t len, int advice);

int __wrap_madvise(void *addr, size_t len, int advice)
{
	int call;

	if (!hold_advice || advice != MADV_WIPEONFORK)
		return __real_madvise(addr, len, advice);
	call = __atomic_add_fetch(&madvise_calls, 1, __ATOMIC_SEQ_CST);
	if (call == 1) {          /* A's probe */
		send_byte(a_in_probe[1], 'a');
		if (read_byte(b_done[0]) < 0)
			_exit(6);
	} else if (call == 2) {   /* B's probe */
		errno = EINVAL;
		return -1;
	}
	return __real_madvise(addr, len, advice);
}

static void *make_group_a(void *arg)
{
	*(errgroup **)arg = errgroup_new();
	return NULL;
}

static int go_in_a_child(errgroup *g)
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		alarm(WAIT_LIMIT_MS / 1000);
		_exit(errgroup_go(g, succeed, NULL) == -ECHILD ? 0 : 1);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int probe_two_answers_at_once(void)
{
	const char *off = getenv("ERRGROUP_DISABLE_WIPEONFORK");
	errgroup *a = NULL, *b;
	pthread_t thread;

	if (off && *off && strcmp(off, "0") != 0)
		return SKIP_STATUS;   /* no advice is asked */
	if (pipe2(a_in_probe, O_CLOEXEC) < 0 || pipe2(b_done, O_CLOEXEC) < 0)
		return 3;
	hold_advice = true;
	if (pthread_create(&thread, NULL, make_group_a, &a) != 0)
		return 3;
	if (read_byte(a_in_probe[0]) < 0)
		return 4;
	b = errgroup_new();
	send_byte(b_done[1], 'b');
	pthread_join(thread, NULL);
	hold_advice = false;
	if (!a || !b)
		return 10;
	if (parentmem_wipes())
		return 11;   /* B's answer came first */
	if (go_in_a_child(a) != 0 || go_in_a_child(b) != 0)
		return 12;
	errgroup_free(a);
	errgroup_free(b);
	return 0;
}

static void test_first_answer_about_wiping_is_everyones(void **state)
{
	(void)state;
	assert_int_equal(status_in_child(probe_two_answers_at_once), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		census_test(test_fork_while_the_first_group_is_made_leaks_no_fd),
		census_test(test_task_started_during_the_pidfd_probe_holds_no_pidfd),
		census_test(test_probe_that_runs_out_of_fds_fails_the_start_and_decides_nothing),
		census_test(test_first_group_without_memory_decides_nothing),
		census_test(test_first_answer_about_wiping_is_everyones),
	};

	census_begin();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
