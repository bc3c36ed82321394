/*
 * test_pidfd_use.c - a pidfd is never used after the library closed it
 * (trap L9 of the reliability notes).
 *
 * Once closed, a pidfd's number is free: the next open in any thread may
 * take it, and a signal or a wait on that number would then go to
 * whatever the host opened, or to another process.  The library keeps
 * every use and every close of a task's pidfd under the group lock, and a
 * task leaves the trees before its pidfd is closed.  This binary checks
 * that at every call: it is linked with -Wl,--wrap for the calls that
 * make, use and close a pidfd (the Makefile), and the wrappers below keep
 * the set of numbers that are pidfds from pidfd_open right now.  A use of
 * any other number is counted.  Threads start, time out, cancel and free
 * groups while another thread opens and closes pipes, so that freed
 * numbers are taken again at once.
 *
 * Only the parent's calls count: a child's copy of the set is its own,
 * and the child makes raw system calls, which are not wrapped.
 */
#include "helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/pidfd.h>

#include "internal.h"   /* pidfd_supported */

#define MAX_TRACKED_FDS 4096
#define THREADS 4
#define ROUNDS 30
#define TASKS_PER_ROUND 8

static pthread_mutex_t tracked_lock = PTHREAD_MUTEX_INITIALIZER;
static bool tracked[MAX_TRACKED_FDS];   /* the number is a live pidfd */
static atomic_int uses, misuses;

static void track(int fd, bool live)
{
	if (fd < 0 || fd >= MAX_TRACKED_FDS)
		return;
	pthread_mutex_lock(&tracked_lock);
	tracked[fd] = live;
	pthread_mutex_unlock(&tracked_lock);
}

static bool is_tracked(int fd)
{
	bool live;

	if (fd < 0 || fd >= MAX_TRACKED_FDS)
		return false;
	pthread_mutex_lock(&tracked_lock);
	live = tracked[fd];
	pthread_mutex_unlock(&tracked_lock);
	return live;
}

static void use(int fd)
{
	atomic_fetch_add(&uses, 1);
	if (!is_tracked(fd))
		atomic_fetch_add(&misuses, 1);
}

int __real_pidfd_open(pid_t pid, unsigned int flags);
int __real_close(int fd);
int __real_pidfd_send_signal(int fd, int sig, siginfo_t *info, unsigned int flags);
int __real_waitid(idtype_t type, id_t id, siginfo_t *info, int options);
int __real_ioctl(int fd, unsigned long request, ...);
int __real_epoll_ctl(int epfd, int op, int fd, struct epoll_event *event);
int __real_fcntl(int fd, int cmd, ...);

int __wrap_pidfd_open(pid_t pid, unsigned int flags);
int __wrap_close(int fd);
int __wrap_pidfd_send_signal(int fd, int sig, siginfo_t *info, unsigned int flags);
int __wrap_waitid(idtype_t type, id_t id, siginfo_t *info, int options);
int __wrap_ioctl(int fd, unsigned long request, ...);
int __wrap_epoll_ctl(int epfd, int op, int fd, struct epoll_event *event);
int __wrap_fcntl(int fd, int cmd, ...);

int __wrap_pidfd_open(pid_t pid, unsigned int flags)
{
	int fd = __real_pidfd_open(pid, flags);

	track(fd, true);
	return fd;
}

/* The number is given up before the close: from then on a use races
 * with the close, which is the bug. */
int __wrap_close(int fd)
{
	if (is_tracked(fd))
		track(fd, false);
	return __real_close(fd);
}

int __wrap_pidfd_send_signal(int fd, int sig, siginfo_t *info, unsigned int flags)
{
	use(fd);
	return __real_pidfd_send_signal(fd, sig, info, flags);
}

int __wrap_waitid(idtype_t type, id_t id, siginfo_t *info, int options)
{
	if (type == P_PIDFD)
		use((int)id);
	return __real_waitid(type, id, info, options);
}

/* The library's only ioctl is PIDFD_GET_INFO, on a pidfd. */
int __wrap_ioctl(int fd, unsigned long request, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	use(fd);
	return __real_ioctl(fd, request, arg);
}

int __wrap_epoll_ctl(int epfd, int op, int fd, struct epoll_event *event)
{
	if (op == EPOLL_CTL_ADD && is_tracked(fd))
		use(fd);
	return __real_epoll_ctl(epfd, op, fd, event);
}

/* A pidfd the kernel gave as 0, 1 or 2 is moved up (fdreg.c): the copy
 * is the pidfd from then on. */
int __wrap_fcntl(int fd, int cmd, ...)
{
	va_list ap;
	long arg;
	int r;

	va_start(ap, cmd);
	arg = va_arg(ap, long);
	va_end(ap);
	r = __real_fcntl(fd, cmd, arg);
	if (cmd == F_DUPFD_CLOEXEC && r >= 0 && is_tracked(fd))
		track(r, true);
	return r;
}

/* ---- the stress ---- */

static int never_written[2];   /* tasks that must be stopped read it */

static int task(void *arg)
{
	switch ((intptr_t)arg % 4) {
	case 0:
		return 0;
	case 1:
		return 3;
	default:
		return read_byte(never_written[0]) < 0 ? 0 : 1;
	}
}

struct round_thread {
	int seed;
	int failures;   /* calls that failed unexpectedly */
};

/* Groups that time out, cancel on error, or are canceled or freed with
 * tasks still running: every path that signals or waits on a pidfd. */
static void *run_rounds(void *arg)
{
	struct round_thread *r = arg;
	unsigned seed = (unsigned)r->seed;

	for (int round = 0; round < ROUNDS; round++) {
		errgroup *g = errgroup_new();
		int kind = rand_r(&seed) % 4;

		if (!g) {
			r->failures++;
			continue;
		}
		if (kind == 0)
			errgroup_set_timeout_ms(g, 1 + rand_r(&seed) % 5);
		/* Kind 2 is canceled while its supervisor thread reaps the
		 * tasks that end at once: a cancel that signalled outside the
		 * lock would meet pidfds being closed. */
		if (kind == 1 || kind == 2)
			errgroup_set_cancel_on_error(g, true);
		errgroup_set_grace_ms(g, rand_r(&seed) % 3);
		for (int i = 0; i < TASKS_PER_ROUND; i++) {
			/* Under cancel-on-error the first task fails, so that
			 * the blocked ones are stopped. */
			intptr_t what = kind == 1 && i == 0 ? 1 : kind == 2 ? 0 : rand_r(&seed);
			int index = errgroup_go(g, task, (void *)what);

			if (index < 0 && index != -ECANCELED)
				r->failures++;
		}
		if (kind == 2)
			errgroup_cancel(g);
		if (kind != 3)
			errgroup_wait(g);
		errgroup_free(g);   /* kind 3: with its tasks still running */
	}
	return NULL;
}

static atomic_bool stop_churning;

/* Takes freed numbers as soon as they are free. */
static void *churn_fds(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop_churning)) {
		int p[2];

		if (pipe2(p, O_CLOEXEC) == 0) {
			close(p[0]);
			close(p[1]);
		}
	}
	return NULL;
}

static void test_no_pidfd_is_used_after_it_is_closed(void **state)
{
	struct round_thread rounds[THREADS];
	pthread_t threads[THREADS], churner;

	(void)state;
	/* Valgrind has no pidfds, so there is nothing to check, and it runs
	 * one thread at a time, which the churning thread would hog. */
	if (under_valgrind())
		skip();
	assert_int_equal(pipe2(never_written, O_CLOEXEC), 0);
	assert_int_equal(pthread_create(&churner, NULL, churn_fds, NULL), 0);
	for (int i = 0; i < THREADS; i++) {
		rounds[i] = (struct round_thread){ .seed = i + 1 };
		assert_int_equal(pthread_create(&threads[i], NULL, run_rounds, &rounds[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_join(threads[i], NULL), 0);
	atomic_store(&stop_churning, true);
	assert_int_equal(pthread_join(churner, NULL), 0);
	close(never_written[0]);
	close(never_written[1]);

	print_message("pidfd uses %d, on a number that was not a live pidfd %d\n",
		      atomic_load(&uses), atomic_load(&misuses));
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(rounds[i].failures, 0);
	assert_int_equal(atomic_load(&misuses), 0);
	/* The check checked something: every task's pidfd was waited on. */
	if (pidfd_supported())
		assert_true(atomic_load(&uses) >= THREADS * ROUNDS);
	assert_true(no_children_left());
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		census_test(test_no_pidfd_is_used_after_it_is_closed),
	};

	census_begin();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
