/*
 * test_hygiene.c - what the library leaves behind and what it takes along:
 * no child, zombie or fd after free; no library fd in a task, whichever
 * thread starts it and whatever the fd limit; an inherited group that
 * refuses to act; the host's SIGCHLD handler, its own children, its signal
 * state and its atexit handlers untouched (its stdio: test_stdio.c); and
 * hosts that make life hard: SIGCHLD ignored or reaped by someone else,
 * stdio closed, a storm of signals.
 *
 * Tasks report through their return value, a pipe or shared memory; only
 * the test asserts.
 */
#include "helpers.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <wchar.h>

#include "internal.h"   /* the group's lock, for the fork-while-locked test;
                           the /proc/self/stat parser */

static int gate[2];           /* the test releases tasks by writing to [1] */

static void pipes_open(void)
{
	ready_pipe_open();
	assert_int_equal(pipe2(gate, O_CLOEXEC), 0);
}

static void pipes_close(void)
{
	ready_pipe_close();
	close(gate[0]);
	close(gate[1]);
}

/*
 * Whether the library can learn the status of a child that someone else
 * reaped: it uses pidfds (not with ERRGROUP_DISABLE_PIDFD=1, nor under
 * valgrind) and the kernel keeps the status for them (Linux 6.15).
 */
static bool reaped_status_recoverable(void)
{
	struct utsname u;
	int major, minor;

	if (!pidfd_supported())
		return false;
	if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &major, &minor) != 2)
		return false;
	return major > 6 || (major == 6 && minor >= 15);
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

static int return_arg(void *arg)
{
	return (int)(intptr_t)arg;
}

static int wait_at_gate(void *arg)
{
	(void)arg;
	return read_byte(gate[0]) < 0 ? 99 : 0;
}

/* ---- free ---- */

static void test_free_with_running_children_leaves_no_child_zombie_or_fd(void **state)
{
	int fds_at_start = open_fd_count();
	errgroup *plain, *supervised;

	(void)state;
	pipes_open();
	plain = errgroup_new();
	supervised = errgroup_new();
	assert_non_null(plain);
	assert_non_null(supervised);
	assert_int_equal(errgroup_set_cancel_on_error(supervised, true), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(errgroup_go(plain, block_forever, NULL), i);
		assert_int_equal(errgroup_go(supervised, block_forever, NULL), i);
	}
	for (int i = 0; i < 6; i++)
		await_word();

	errgroup_free(plain);
	errgroup_free(supervised);
	pipes_close();
	assert_true(no_children_left());
	assert_int_equal(open_fd_count(), fds_at_start);
}

static void test_free_null_is_a_noop(void **state)
{
	int fds_at_start = open_fd_count();

	(void)state;
	errgroup_free(NULL);
	assert_int_equal(open_fd_count(), fds_at_start);
	assert_true(no_children_left());
}

static void test_free_kills_a_running_child(void **state)
{
	struct pollfd p = { .events = POLLIN };
	errgroup *g = errgroup_new();
	siginfo_t si;
	pid_t pid;
	int r;

	(void)state;
	assert_non_null(g);
	pipes_open();
	assert_int_equal(errgroup_go(g, block_forever, NULL), 0);
	pid = await_word();
	p.fd = pidfd_open(pid, 0);
	assert_true(p.fd >= 0 || errno == ENOSYS);   /* valgrind has none */

	errgroup_free(g);
	if (p.fd >= 0) {
		do
			r = poll(&p, 1, WAIT_LIMIT_MS);
		while (r < 0 && errno == EINTR);
		assert_int_equal(r, 1);
		assert_true(p.revents & POLLIN);
		/* Gone: no process is left behind the pidfd. */
		assert_int_equal(pidfd_send_signal(p.fd, 0, NULL, 0), -1);
		assert_int_equal(errno, ESRCH);
		close(p.fd);
	}
	/* And reaped: it is no longer our child. */
	assert_int_equal(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
	pipes_close();
	assert_true(no_children_left());
}

/* ---- what a task inherits ---- */

/* The host's fds when the test started its groups: a task keeps those
 * (they are the host's choice), and the library's two. */
static int host_fds[64];
static int host_fd_count;

static void note_host_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	assert_non_null(d);
	host_fd_count = 0;
	while ((e = readdir(d)) && host_fd_count < 64) {
		int fd = atoi(e->d_name);

		if (e->d_name[0] != '.' && fd != dirfd(d))
			host_fds[host_fd_count++] = fd;
	}
	closedir(d);
}

static bool is_host_fd(int fd)
{
	for (int i = 0; i < host_fd_count; i++)
		if (host_fds[i] == fd)
			return true;
	return false;
}

/*
 * Counts the fds that are neither the host's nor, in a task, the two the
 * library gives it (the channel's shared end, a socket, and its lifeline's
 * read end, a pipe), and appends each one's number and target to names.
 */
static int foreign_fd_count(char *names, size_t size, bool in_task)
{
	int sockets = 0, pipes = 0, extra = 0;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	char target[256];

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);
		ssize_t n;

		if (e->d_name[0] == '.' || fd == dirfd(d) || is_host_fd(fd))
			continue;
		n = readlinkat(dirfd(d), e->d_name, target, sizeof target - 1);
		target[n > 0 ? n : 0] = '\0';
		if (in_task && strncmp(target, "socket:", 7) == 0 && sockets++ == 0)
			continue;
		if (in_task && strncmp(target, "pipe:", 5) == 0 && pipes++ == 0)
			continue;
		extra++;
		snprintf(names + strlen(names), size - strlen(names), " %d=%s", fd, target);
	}
	closedir(d);
	return extra;
}

/* The census, as the task's result and message. */
static int report_foreign_fds(void)
{
	char names[1024] = "";
	int extra = foreign_fd_count(names, sizeof names, true);

	if (extra < 0)
		return 100;
	if (extra)
		return errgroup_errorf(extra, "fds the task should not have:%s", names);
	return 0;
}

/* The census, then a wait at the gate, so that the siblings started after
 * it exist too. */
static int count_foreign_fds(void *arg)
{
	int r = report_foreign_fds();

	(void)arg;
	if (read_byte(gate[0]) < 0)
		return 101;
	return r;
}

static void test_task_sees_no_library_fd(void **state)
{
	const struct errgroup_error *e;
	errgroup *first, *second;

	(void)state;
	pipes_open();
	note_host_fds();
	first = errgroup_new();
	second = errgroup_new();
	assert_non_null(first);
	assert_non_null(second);
	assert_int_equal(errgroup_set_cancel_on_error(second, true), 0);   /* + a thread */
	for (int i = 0; i < 4; i++) {
		assert_int_equal(errgroup_go(first, count_foreign_fds, NULL), i);
		assert_int_equal(errgroup_go(second, count_foreign_fds, NULL), i);
	}
	gate_open_n(gate[1], 8);

	e = errgroup_wait(first);
	if (e)
		print_error("%s\n", e->message);
	assert_null(e);
	e = errgroup_wait(second);
	if (e)
		print_error("%s\n", e->message);
	assert_null(e);
	errgroup_free(first);
	errgroup_free(second);
	pipes_close();
}

/*
 * Fds made in one thread while another forks (F8): a lifeline, a pidfd
 * or a new group's fds made but not yet registered when a sibling thread
 * forks would stay open in that task.  Four threads at once each make
 * group after group and start tasks in each, every task taking the census
 * as soon as it runs.  The race is narrow: it takes hundreds of forks to
 * meet it.
 */
#define CENSUS_THREADS 4
#define CENSUS_GROUPS_PER_THREAD 50
#define CENSUS_TASKS_PER_GROUP 10

struct census_thread {
	pthread_barrier_t *start;
	int rounds;                 /* groups to make */
	int failed;                 /* tasks that found a foreign fd, or -errno */
	char message[256];          /* the first one's */
};

static int take_census(void *arg)
{
	(void)arg;
	return report_foreign_fds();
}

/* One group's round; false if a call failed (c->failed says how). */
static bool census_round(struct census_thread *c)
{
	errgroup *g = errgroup_new();
	int r = 0, failed;

	if (!g) {
		c->failed = -errno;
		return false;
	}
	for (int i = 0; i < CENSUS_TASKS_PER_GROUP && r >= 0; i++)
		r = errgroup_go(g, take_census, NULL);
	errgroup_wait(g);
	failed = (int)errgroup_error_count(g);
	if (failed && !c->failed)
		snprintf(c->message, sizeof c->message, "%s", errgroup_error_at(g, 0)->message);
	c->failed += failed;
	errgroup_free(g);
	if (r < 0)
		c->failed = r;
	return r >= 0;
}

static void *start_census_tasks(void *arg)
{
	struct census_thread *c = arg;

	pthread_barrier_wait(c->start);
	for (int i = 0; i < c->rounds && census_round(c); i++)
		;
	return NULL;
}

static void test_task_sees_no_library_fd_while_four_threads_start_tasks(void **state)
{
	struct census_thread census[CENSUS_THREADS];
	pthread_t threads[CENSUS_THREADS];
	/* Forks under valgrind and the sanitizers are slow: fewer rounds,
	 * which still exercise the path if they catch the race less often. */
	int rounds = under_valgrind() || under_sanitizer() ? CENSUS_GROUPS_PER_THREAD / 10 :
							      CENSUS_GROUPS_PER_THREAD;
	pthread_barrier_t start;

	(void)state;
	note_host_fds();
	assert_int_equal(pthread_barrier_init(&start, NULL, CENSUS_THREADS), 0);
	for (int i = 0; i < CENSUS_THREADS; i++) {
		census[i] = (struct census_thread){ .start = &start, .rounds = rounds };
		assert_int_equal(pthread_create(&threads[i], NULL, start_census_tasks, &census[i]), 0);
	}
	for (int i = 0; i < CENSUS_THREADS; i++)
		assert_int_equal(pthread_join(threads[i], NULL), 0);
	pthread_barrier_destroy(&start);
	for (int i = 0; i < CENSUS_THREADS; i++) {
		if (census[i].failed)
			print_error("thread %d: %d: %s\n", i, census[i].failed, census[i].message);
		assert_int_equal(census[i].failed, 0);
	}
	assert_true(no_children_left());
}

/*
 * Scenario 5: a host that lowered RLIMIT_NOFILE below the numbers of fds
 * it already holds.  A child that closed fds up to the limit
 * (_SC_OPEN_MAX) would keep every library fd above it.  The test fills
 * the numbers below LOWERED_FD_LIMIT, makes groups whose fds land above,
 * frees the low numbers and lowers the limit; a task of a new group (its
 * fds below the limit) and one of an old group (its channel above) each
 * take the census.
 */
#define LOWERED_FD_LIMIT 64
#define HIGH_GROUPS 3

/* The fds numbered limit or more that are not the host's. */
static int new_fds_at_or_above(int limit)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);

		if (e->d_name[0] != '.' && fd >= limit && fd != dirfd(d) && !is_host_fd(fd))
			n++;
	}
	closedir(d);
	return n;
}

static void test_task_sees_no_library_fd_above_a_lowered_fd_limit(void **state)
{
	const struct errgroup_error *low_result, *high_result;
	int fillers[LOWERED_FD_LIMIT], filler_count = 0, high_fds, r;
	bool low_failed, high_failed;
	errgroup *high[HIGH_GROUPS], *low;
	struct rlimit old, lowered;

	(void)state;
	pipes_open();
	note_host_fds();
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	assert_true(old.rlim_cur > LOWERED_FD_LIMIT * 2);
	assert_int_equal(new_fds_at_or_above(LOWERED_FD_LIMIT), 0);
	/* Every number below the limit taken, so that what comes next
	 * lands above it. */
	do {
		fillers[filler_count] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		assert_true(fillers[filler_count] >= 0);
	} while (fillers[filler_count++] < LOWERED_FD_LIMIT - 1);
	for (int i = 0; i < HIGH_GROUPS; i++) {
		high[i] = errgroup_new();
		assert_non_null(high[i]);
		for (int k = 0; k < 2; k++)
			assert_int_equal(errgroup_go(high[i], wait_at_gate, NULL), k);
	}
	for (int i = 0; i < filler_count; i++)
		close(fillers[i]);
	/* Each group's four fds, each task's pidfd and lifeline (the
	 * fallback has no pidfd). */
	high_fds = new_fds_at_or_above(LOWERED_FD_LIMIT);
	assert_true(high_fds >= HIGH_GROUPS * (4 + 2 * (pidfd_supported() ? 2 : 1)));

	lowered.rlim_cur = LOWERED_FD_LIMIT;
	lowered.rlim_max = old.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &lowered), 0);
	low = errgroup_new();
	r = low ? errgroup_go(low, take_census, NULL) : -errno;
	if (r == 0)
		r = errgroup_go(high[0], take_census, NULL);
	low_result = low ? errgroup_wait(low) : NULL;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);

	/* Everything ends and is freed before the asserts, so that a
	 * failure leaves no child to the tests that follow. */
	gate_open_n(gate[1], HIGH_GROUPS * 2);
	high_result = errgroup_wait(high[0]);
	if (low_result)
		print_error("task of the new group: %s\n", low_result->message);
	if (high_result)
		print_error("task of an old group: %s\n", high_result->message);
	low_failed = low_result != NULL;
	high_failed = high_result != NULL;
	for (int i = 0; i < HIGH_GROUPS; i++)
		errgroup_free(high[i]);
	errgroup_free(low);
	pipes_close();

	assert_int_equal(r, 2);   /* high[0]'s third task */
	assert_false(low_failed);
	assert_false(high_failed);
	assert_true(no_children_left());
}

/*
 * A task that runs a group of its own: its task (the test's grandchild)
 * takes the census, and may hold only its own group's two fds, not the
 * outer group's channel and lifeline, which its parent task keeps.  The
 * task's own registry lists those two (fdreg.c), whichever of the task's
 * threads starts the inner task; a child the task forks itself closes
 * them too.
 */
static int census_in_own_group(void *arg)
{
	const struct errgroup_error *e;
	errgroup *inner = errgroup_new();
	int r;

	(void)arg;
	if (!inner)
		return 100;
	r = errgroup_go(inner, take_census, NULL) == 0 ? 0 : 101;
	e = errgroup_wait(inner);
	if (r == 0 && e)
		r = errgroup_errorf(e->code, "%s", e->message);
	errgroup_free(inner);
	return r;
}

static void *run_census_in_own_group(void *result)
{
	*(int *)result = census_in_own_group(NULL);
	return NULL;
}

static int census_in_own_group_from_a_second_thread(void *arg)
{
	pthread_t thread;
	int r = 102;

	(void)arg;
	if (pthread_create(&thread, NULL, run_census_in_own_group, &r) != 0)
		return 103;
	pthread_join(thread, NULL);
	return r;
}

static int census_in_own_fork(void *arg)
{
	char names[512] = "";
	int status;
	pid_t pid;

	(void)arg;
	pid = fork();
	if (pid == 0)
		_exit(foreign_fd_count(names, sizeof names, false) ? 1 : 0);
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return 104;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 :
	       errgroup_errorf(105, "the task's own child holds library fds");
}

static void test_task_of_a_task_holds_no_fd_of_the_outer_group(void **state)
{
	errgroup_task *kinds[] = { census_in_own_group, census_in_own_group_from_a_second_thread,
				   census_in_own_fork };
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	note_host_fds();
	for (int i = 0; i < 3; i++)
		assert_int_equal(errgroup_go(g, kinds[i], NULL), i);
	e = errgroup_wait(g);
	if (e)
		print_error("task %d: %s\n", e->task, e->message);
	assert_null(e);
	errgroup_free(g);
}

/*
 * A child that a task forks itself is no task: the fork closed the task's
 * channel and lifeline there, and their numbers are the child's to reuse.
 * The child opens socket pairs until it holds both numbers; then
 * errgroup_errorf must send nothing into its sockets, and its own fork
 * must leave them all open in the grandchild (the child's registry must
 * not list them).  Exit status: 0, or a bit for each check that failed.
 */
#define REUSE_PAIRS 32
enum reuse_failure {
	REUSE_LEFT_OPEN = 1,        /* the fork left the task's fds open */
	REUSE_SETUP = 2,
	REUSE_FRAME_SENT = 4,       /* errgroup_errorf sent into our socket */
	REUSE_CLOSED_BELOW = 8,     /* the grandchild lost some of our fds */
};

static int reuse_the_task_fd_numbers(struct task_fds kept)
{
	bool channel_taken = false, lifeline_taken = false;
	int pairs[REUSE_PAIRS][2], n = 0, failed = 0, status;
	char frame[64];
	pid_t pid;

	if (fcntl(kept.channel, F_GETFD) >= 0 || fcntl(kept.lifeline, F_GETFD) >= 0)
		return REUSE_LEFT_OPEN;
	while (!channel_taken || !lifeline_taken) {
		if (n == REUSE_PAIRS ||
		    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pairs[n]) < 0)
			return REUSE_SETUP;
		for (int k = 0; k < 2; k++) {
			channel_taken |= pairs[n][k] == kept.channel;
			lifeline_taken |= pairs[n][k] == kept.lifeline;
		}
		n++;
	}
	errgroup_errorf(1, "sent by a child of a task");
	for (int i = 0; i < n; i++)
		for (int k = 0; k < 2; k++)
			if (recv(pairs[i][k], frame, sizeof frame, MSG_DONTWAIT) >= 0)
				failed |= REUSE_FRAME_SENT;
	pid = fork();
	if (pid == 0) {
		for (int i = 0; i < n; i++)
			for (int k = 0; k < 2; k++)
				if (fcntl(pairs[i][k], F_GETFD) < 0)
					_exit(REUSE_CLOSED_BELOW);
		_exit(0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return failed | REUSE_SETUP;
	return failed | WEXITSTATUS(status);
}

static int fork_a_child_that_reuses_the_task_fd_numbers(void *arg)
{
	struct task_fds kept = task_kept_fds();
	int status;
	pid_t pid;

	(void)arg;
	if (kept.channel < 0 || kept.lifeline < 0)
		return errgroup_errorf(100, "the task keeps no fds");
	pid = fork();
	if (pid == 0)
		_exit(reuse_the_task_fd_numbers(kept));
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return errgroup_errorf(101, "the task's child was lost");
	status = WEXITSTATUS(status);
	if (status == 0)
		return 0;
	return errgroup_errorf(status, "in the task's child:%s%s%s%s",
			       status & REUSE_LEFT_OPEN ? " the task's fds were left open;" : "",
			       status & REUSE_SETUP ? " setup failed;" : "",
			       status & REUSE_FRAME_SENT ?
			       " errgroup_errorf sent into the child's own socket;" : "",
			       status & REUSE_CLOSED_BELOW ?
			       " its fork closed fds that took the task's numbers;" : "");
}

static void test_child_of_a_task_is_no_task_once_it_reuses_the_task_fd_numbers(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	assert_int_equal(errgroup_go(g, fork_a_child_that_reuses_the_task_fd_numbers, NULL), 0);
	e = errgroup_wait(g);
	if (e)
		print_error("%s\n", e->message);
	assert_null(e);
	errgroup_free(g);
}

/*
 * The same numbers reused in the task itself, which closed every fd it
 * inherited first (closefrom before it runs a program, say): its own
 * sockets then hold the channel's and the lifeline's numbers.  Nothing
 * the library sends may go into them, and a child the task forks must
 * keep them all: the task's children used to close those numbers, and
 * errgroup_errorf sent its frame into the socket.
 */
static int close_every_fd_then_reuse_the_numbers(void *arg)
{
	struct task_fds kept = task_kept_fds();

	(void)arg;
	if (kept.channel < 0 || kept.lifeline < 0)
		return errgroup_errorf(100, "the task keeps no fds");
	if (syscall(SYS_close_range, 3, ~0U, 0) < 0)
		return REUSE_SETUP;
	return reuse_the_task_fd_numbers(kept);
}

static void test_task_that_closed_its_fds_keeps_its_own_files_under_the_numbers(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	assert_int_equal(errgroup_go(g, close_every_fd_then_reuse_the_numbers, NULL), 0);
	e = errgroup_wait(g);
	if (e)
		print_error("%s (code %d)\n", e->message, e->code);
	assert_null(e);
	errgroup_free(g);
}

/*
 * And the frame that carries a failing task's return code: a task that
 * put a socket of its own under the channel's number would receive it.
 * A grandchild, in a session of its own so that it outlives the task,
 * holds the other end and says what came once the task is gone: 'F' for
 * a frame, 'E' for the end.
 */
static int verdict_fd = -1;

static int close_the_channel_then_return_7(void *arg)
{
	struct task_fds kept = task_kept_fds();
	char verdict, frame[64];
	int pair[2], away[2];
	pid_t pid;

	(void)arg;
	/* Closed, and the number given to a socket of the task's own. */
	if (kept.channel < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0 ||
	    dup2(pair[0], kept.channel) < 0 || close(pair[0]) < 0 || pipe2(away, O_CLOEXEC) < 0)
		return 100;
	pid = fork();
	if (pid < 0)
		return 101;
	if (pid == 0) {
		/* Out of the task's process group before the task ends, or
		 * the kill of what it left would take this process too. */
		if (setsid() < 0 || write(away[1], "s", 1) != 1)
			_exit(1);
		close(kept.channel);
		verdict = recv(pair[1], frame, sizeof frame, 0) > 0 ? 'F' : 'E';
		_exit(write(verdict_fd, &verdict, 1) == 1 ? 0 : 1);
	}
	if (read_byte(away[0]) < 0)
		return 102;
	return 7;
}

static void test_task_that_reused_its_channel_number_gets_no_frame_in_its_own_socket(void **state)
{
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();
	struct pollfd p;
	int report[2];
	char verdict = 0;

	(void)state;
	assert_non_null(g);
	assert_int_equal(pipe2(report, O_CLOEXEC), 0);
	verdict_fd = report[1];
	assert_int_equal(errgroup_go(g, close_the_channel_then_return_7, NULL), 0);
	e = errgroup_wait(g);
	close(report[1]);
	p = (struct pollfd){ .fd = report[0], .events = POLLIN };
	assert_int_equal(poll(&p, 1, WAIT_LIMIT_MS), 1);
	assert_int_equal(read(report[0], &verdict, 1), 1);
	close(report[0]);
	assert_non_null(e);
	/* Its status, 7, since the frame with the whole code is not sent. */
	assert_int_equal(e->code, 7);
	assert_int_equal(verdict, 'E');
	errgroup_free(g);
}

/*
 * A child the host forks itself, while tasks run, holds no library fd at
 * all: it would hold the tasks' lifelines (they would then outlive the
 * host) and pidfds.  And it can use the library in turn: its own task
 * holds its own group's two fds and no other, and nothing it needs was
 * closed under it (the copy of the registry taken at the host's fork
 * lists numbers the child's new group may have taken since; it must not
 * be used again).  Results come back as the child's exit status.
 */
static int census_then_message(void *arg)
{
	int r = take_census(arg);

	return r ? r : errgroup_errorf(42, "census clean");
}

static int host_child_census(void)
{
	const struct errgroup_error *e;
	char names[512] = "";
	errgroup *g;
	int r;

	if (foreign_fd_count(names, sizeof names, false) != 0)
		return 1;
	g = errgroup_new();
	if (!g)
		return 2;
	if (errgroup_go(g, census_then_message, NULL) != 0) {
		errgroup_free(g);
		return 3;
	}
	e = errgroup_wait(g);
	r = !e ? 4 : e->code != 42 ? 5 : strcmp(e->message, "census clean") != 0 ? 6 : 0;
	errgroup_free(g);
	return r;
}

static void test_child_the_host_forks_holds_no_library_fd(void **state)
{
	errgroup *g = errgroup_new();
	int status;
	pid_t host_child;

	(void)state;
	assert_non_null(g);
	pipes_open();
	note_host_fds();
	for (int i = 0; i < 2; i++)
		assert_int_equal(errgroup_go(g, wait_at_gate, NULL), i);
	fflush(NULL);
	host_child = fork();
	assert_true(host_child >= 0);
	if (host_child == 0)
		_exit(host_child_census());
	assert_int_equal(waitpid(host_child, &status, 0), host_child);
	gate_open_n(gate[1], 2);
	assert_null(errgroup_wait(g));
	errgroup_free(g);
	pipes_close();
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static int noop(void *arg)
{
	(void)arg;
	return 0;
}

/* Every call on the group it inherited must refuse; each failure is a
 * bit of the result, sent through the pipe. */
static int act_on_inherited_group(void *arg)
{
	errgroup *g = arg;
	int failures = 0;

	if (errgroup_go(g, noop, NULL) != -ECHILD)
		failures |= 1 << 0;
	if (errgroup_try_go(g, noop, NULL) != -ECHILD)
		failures |= 1 << 1;
	if (errgroup_wait(g) != NULL)
		failures |= 1 << 2;
	if (errgroup_set_limit(g, 2) != -ECHILD)
		failures |= 1 << 3;
	if (errgroup_set_cancel_on_error(g, true) != -ECHILD)
		failures |= 1 << 4;
	if (errgroup_set_grace_ms(g, 0) != -ECHILD)
		failures |= 1 << 5;
	if (errgroup_signal(g, SIGKILL) != -ECHILD)
		failures |= 1 << 6;
	errgroup_cancel(g);
	errgroup_free(g);   /* only releases the inherited memory */
	tell_word(failures);
	return failures;
}

static void test_inherited_group_refuses_to_act_in_a_task(void **state)
{
	const struct errgroup_error *first;
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	pipes_open();
	assert_int_equal(errgroup_go(g, return_arg, (void *)(intptr_t)3), 0);
	first = errgroup_wait(g);
	assert_non_null(first);

	assert_int_equal(errgroup_go(g, wait_at_gate, NULL), 1);
	assert_int_equal(errgroup_go(g, act_on_inherited_group, g), 2);
	assert_int_equal(await_word(), 0);
	/* Its signal, cancel and free did nothing here: the sibling still
	 * runs, and the group still takes tasks. */
	gate_open_n(gate[1], 1);
	assert_ptr_equal(errgroup_wait(g), first);
	assert_int_equal(errgroup_error_count(g), 1);
	assert_int_equal(errgroup_go(g, noop, NULL), 3);
	assert_ptr_equal(errgroup_wait(g), first);
	errgroup_free(g);
	pipes_close();
}

/*
 * Another thread of the host may hold a group's lock when some fork
 * happens; in the child nobody will ever release it.  The test holds the
 * lock itself while a second group forks a task that uses the first.
 */
static void test_inherited_group_refuses_even_if_its_lock_was_held_at_fork(void **state)
{
	struct pollfd p = { .events = POLLIN };
	errgroup *locked = errgroup_new(), *g = errgroup_new();
	int r;

	(void)state;
	assert_non_null(locked);
	assert_non_null(g);
	pipes_open();
	pthread_mutex_lock(&locked->lock);
	r = errgroup_go(g, act_on_inherited_group, locked);
	pthread_mutex_unlock(&locked->lock);
	assert_int_equal(r, 0);

	p.fd = ready_pipe[0];
	do
		r = poll(&p, 1, WAIT_LIMIT_MS);
	while (r < 0 && errno == EINTR);
	if (r != 1) {
		/* Stuck on the lock: kill it, then fail. */
		errgroup_set_grace_ms(g, 0);
		errgroup_cancel(g);
		errgroup_wait(g);
		fail_msg("the task hangs on the inherited group's lock");
	}
	assert_int_equal(await_word(), 0);
	assert_null(errgroup_wait(g));
	errgroup_free(g);
	errgroup_free(locked);
	pipes_close();
}

/* ---- the host's children and SIGCHLD ---- */

static volatile sig_atomic_t sigchld_count;

static void count_sigchld(int sig)
{
	(void)sig;
	sigchld_count++;
}

static void test_host_sigchld_handler_and_own_child_keep_working(void **state)
{
	struct sigaction sa, old, now;
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();
	siginfo_t si;
	pid_t own;
	int r, wstatus;

	(void)state;
	assert_non_null(g);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = count_sigchld;   /* no SA_RESTART: calls see EINTR */
	assert_int_equal(sigaction(SIGCHLD, &sa, &old), 0);
	sigchld_count = 0;

	/* The host's own child, already a zombie while the library works. */
	own = fork();
	assert_true(own >= 0);
	if (own == 0)
		_exit(42);
	do {
		memset(&si, 0, sizeof si);
		r = waitid(P_PID, (id_t)own, &si, WEXITED | WNOWAIT);
	} while (r < 0 && errno == EINTR);
	assert_int_equal(r, 0);

	for (int i = 0; i < 4; i++)
		assert_int_equal(errgroup_go(g, return_arg, (void *)(intptr_t)(i == 2 ? 3 : 0)), i);
	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(e->task, 2);
	assert_int_equal(e->cause, ERRGROUP_RETURNED);
	assert_int_equal(e->code, 3);
	assert_int_equal(errgroup_error_count(g), 1);
	errgroup_free(g);

	/* The library neither reaped the host's child nor took its handler. */
	do
		r = waitpid(own, &wstatus, 0);
	while (r < 0 && errno == EINTR);
	assert_int_equal(r, own);
	assert_true(WIFEXITED(wstatus));
	assert_int_equal(WEXITSTATUS(wstatus), 42);
	assert_true(sigchld_count >= 1);
	assert_int_equal(sigaction(SIGCHLD, NULL, &now), 0);
	assert_ptr_equal(now.sa_handler, count_sigchld);

	assert_int_equal(sigaction(SIGCHLD, &old, NULL), 0);
	assert_true(no_children_left());
}

/*
 * The ways a task can end whose status someone else may take: each one's
 * result must be the true one or, where the status is gone, "exit status
 * lost" (code -1), never a success that did not happen.  A code a task
 * returned comes through the channel (or PIDFD_INFO_EXIT); an exit status
 * only through PIDFD_INFO_EXIT (Linux 6.15), so in the fallback mode
 * (ERRGROUP_DISABLE_PIDFD=1, valgrind) it may be lost.
 */
enum end_kind { END_RETURNS_7, END_EXITS_3, END_SUCCEEDS, END_KILLED_BY_SIGTERM, END_KINDS };

#define END_AT_GATE 0x10   /* with the kind: read a byte of the gate first */

static int end_as_told(void *arg)
{
	int how = (int)(intptr_t)arg;

	if ((how & END_AT_GATE) && read_byte(gate[0]) < 0)
		return 99;
	switch ((enum end_kind)(how & ~END_AT_GATE)) {
	case END_RETURNS_7:
		return 7;
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

/* Task i ends as kind i. */
static void start_each_kind_of_end(errgroup *g, int flags)
{
	for (int kind = 0; kind < END_KINDS; kind++)
		assert_int_equal(errgroup_go(g, end_as_told, (void *)(intptr_t)(kind | flags)), kind);
}

static void expect_lost(const struct errgroup_error *e)
{
	assert_int_equal(e->cause, ERRGROUP_EXITED);
	assert_int_equal(e->code, -1);
	assert_non_null(strstr(e->message, "lost"));
}

static void expect_status_or_lost(const struct errgroup_error *e, enum errgroup_cause cause,
				  int code)
{
	assert_non_null(e);
	if (reaped_status_recoverable() || e->code == code) {
		assert_int_equal(e->cause, cause);
		assert_int_equal(e->code, code);
	} else {
		expect_lost(e);
	}
}

static void expect_each_end_or_lost(errgroup *g)
{
	const struct errgroup_error *by_task[END_KINDS] = { NULL };

	for (size_t i = 0; i < errgroup_error_count(g); i++) {
		const struct errgroup_error *e = errgroup_error_at(g, i);

		assert_true(e->task >= 0 && e->task < END_KINDS);
		assert_null(by_task[e->task]);
		by_task[e->task] = e;
	}
	assert_non_null(by_task[END_RETURNS_7]);
	assert_int_equal(by_task[END_RETURNS_7]->cause, ERRGROUP_RETURNED);
	assert_int_equal(by_task[END_RETURNS_7]->code, 7);
	expect_status_or_lost(by_task[END_EXITS_3], ERRGROUP_EXITED, 3);
	expect_status_or_lost(by_task[END_KILLED_BY_SIGTERM], ERRGROUP_SIGNALED, SIGTERM);
	/* A task that returned 0 sent nothing: without its status, only
	 * "lost" can be said of it. */
	if (reaped_status_recoverable())
		assert_null(by_task[END_SUCCEEDS]);
	else if (by_task[END_SUCCEEDS])
		expect_lost(by_task[END_SUCCEEDS]);
}

/* With SIGCHLD ignored the kernel reaps the children itself. */
static void test_host_ignoring_sigchld_still_gets_each_task_result(void **state)
{
	const struct errgroup_error *first;
	struct sigaction ignore, old;
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	memset(&ignore, 0, sizeof ignore);
	ignore.sa_handler = SIG_IGN;
	assert_int_equal(sigaction(SIGCHLD, &ignore, &old), 0);

	start_each_kind_of_end(g, 0);
	first = errgroup_wait(g);
	assert_int_equal(sigaction(SIGCHLD, &old, NULL), 0);
	assert_non_null(first);

	expect_each_end_or_lost(g);
	errgroup_free(g);
	assert_true(no_children_left());
}

/* SA_NOCLDWAIT: the kernel reaps too, and still runs the host's handler
 * (no SA_RESTART: the library's calls see EINTR as well). */
static void test_host_with_sa_nocldwait_still_gets_each_task_result(void **state)
{
	const struct errgroup_error *first;
	struct sigaction nocldwait, old;
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	memset(&nocldwait, 0, sizeof nocldwait);
	nocldwait.sa_handler = count_sigchld;
	nocldwait.sa_flags = SA_NOCLDWAIT;
	assert_int_equal(sigaction(SIGCHLD, &nocldwait, &old), 0);
	sigchld_count = 0;

	start_each_kind_of_end(g, 0);
	first = errgroup_wait(g);
	assert_int_equal(sigaction(SIGCHLD, &old, NULL), 0);
	assert_non_null(first);
	assert_true(sigchld_count >= 1);

	expect_each_end_or_lost(g);
	errgroup_free(g);
	assert_true(no_children_left());
}

/* The host's reaper: waitpid(-1), as an old event loop does, until it has
 * taken as many children as it was told. */
static void *reap_any_child(void *arg)
{
	int *reaped = arg, wstatus;

	while (*reaped < END_KINDS) {
		pid_t pid = waitpid(-1, &wstatus, 0);

		if (pid > 0)
			(*reaped)++;
		else if (errno != EINTR)
			break;
	}
	return NULL;
}

/* Every task's status taken by a thread of the host before the library
 * looks: the worst case of a host that reaps whatever exits. */
static void test_host_thread_reaping_any_child_still_gets_each_task_result(void **state)
{
	errgroup *g = errgroup_new();
	pthread_t reaper;
	int reaped = 0;

	(void)state;
	assert_non_null(g);
	pipes_open();
	start_each_kind_of_end(g, END_AT_GATE);
	/* Now that there are children: with none, waitpid(-1) returns at
	 * once. */
	assert_int_equal(pthread_create(&reaper, NULL, reap_any_child, &reaped), 0);
	gate_open_n(gate[1], END_KINDS);
	assert_int_equal(pthread_join(reaper, NULL), 0);
	assert_int_equal(reaped, END_KINDS);

	assert_non_null(errgroup_wait(g));
	expect_each_end_or_lost(g);
	errgroup_free(g);
	pipes_close();
	assert_true(no_children_left());
}

/* ---- the task starts clean ---- */

static void ignore_signal(int sig)
{
	(void)sig;
}

static unsigned long long status_mask(const char *status, const char *field)
{
	const char *line = strstr(status, field);

	return line ? strtoull(line + strlen(field), NULL, 16) : ~0ULL;
}

#define BIT(sig) (1ULL << ((sig) - 1))
#define CLASSIC_SIGNALS 0x7fffffffULL   /* 1..31; glibc keeps 32, 33 */

/* What the task sees through the API; the bits as report_signal_state. */
static int check_signal_state_by_api(void)
{
	struct sigaction sa;
	sigset_t blocked;
	int failures = 0;

	sigprocmask(SIG_BLOCK, NULL, &blocked);
	if (sigismember(&blocked, SIGINT))
		failures |= 1 << 0;
	sigaction(SIGTERM, NULL, &sa);
	if (sa.sa_handler != SIG_DFL)
		failures |= 1 << 1;
	sigaction(SIGUSR1, NULL, &sa);
	if (sa.sa_handler != SIG_DFL)
		failures |= 1 << 2;
	if (!sigisemptyset(&blocked))
		failures |= 1 << 3;
	return failures;
}

/* Each host setting still visible in the task is a bit of the result:
 * as the task sees it, and as the kernel does (/proc/self/status). */
static int report_signal_state(void *arg)
{
	char status[4096];
	unsigned long long blocked, ignored, caught;
	int fd, failures = check_signal_state_by_api();
	ssize_t n;

	(void)arg;
	if (under_valgrind())
		return failures;
	fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 100;
	n = read(fd, status, sizeof status - 1);
	close(fd);
	if (n <= 0)
		return 101;
	status[n] = '\0';
	blocked = status_mask(status, "\nSigBlk:");
	ignored = status_mask(status, "\nSigIgn:");
	caught = status_mask(status, "\nSigCgt:");
	if (blocked & BIT(SIGINT))
		failures |= 1 << 0;
	if (ignored & BIT(SIGTERM))
		failures |= 1 << 1;
	if (caught & BIT(SIGUSR1))
		failures |= 1 << 2;
	if (blocked != 0)
		failures |= 1 << 3;
	if ((ignored | caught) & CLASSIC_SIGNALS)
		failures |= 1 << 4;
	return failures;
}

/* A gate signal that the host's process group got (a host that uses
 * SIGRTMIN for its own ends) reaches a new child in the moment before it
 * leads its own group.  An atfork child handler raises one in the child,
 * as such a stray would arrive: before the parent's gate signal, or once
 * that is queued (the child's signals are all blocked until the gate). */
enum stray { NO_STRAY, STRAY_FIRST, STRAY_AFTER_GATE };
static volatile sig_atomic_t raise_stray_gate;

static void stray_gate_in_child(void)
{
	sigset_t pending;

	if (raise_stray_gate == NO_STRAY)
		return;
	if (raise_stray_gate == STRAY_AFTER_GATE)
		do
			sigpending(&pending);
		while (!sigismember(&pending, SIGRTMIN));
	kill(getpid(), SIGRTMIN);
}

static int succeed_once_released(void *arg)
{
	return read_byte(*(int *)arg) == 'x' ? 0 : 1;
}

/* Taken for the gate, the stray would let the task run before the parent
 * watches it, and the parent's own gate signal, still to come or
 * queued, would then kill it (SIGRTMIN's default action). */
static void test_stray_gate_signal_neither_opens_the_gate_nor_kills_the_task(void **state)
{
	static bool registered;
	errgroup *g = errgroup_new();
	int release[2];

	(void)state;
	assert_non_null(g);
	if (!registered)
		assert_int_equal(pthread_atfork(NULL, NULL, stray_gate_in_child), 0);
	registered = true;
	assert_int_equal(pipe2(release, O_CLOEXEC), 0);
	for (int stray = STRAY_FIRST; stray <= STRAY_AFTER_GATE; stray++) {
		raise_stray_gate = stray;
		assert_int_equal(errgroup_go(g, succeed_once_released, &release[0]),
				 stray - STRAY_FIRST);
		raise_stray_gate = NO_STRAY;
		/* go() has sent the parent's gate signal by now. */
		gate_open_n(release[1], 1);
		assert_null(errgroup_wait(g));
	}
	close(release[0]);
	close(release[1]);
	errgroup_free(g);
}

/*
 * A host whose RLIMIT_SIGPENDING is 0, which its tasks inherit: as if the
 * user's pending signals had reached the limit (a task that queues
 * real-time signals can bring that about), but without depending on what
 * other processes of the user have pending.  Reports its task's result
 * through its exit status: 0 when the task ran and returned 7.
 */
static _Noreturn void host_without_room_for_pending_signals(int report_fd)
{
	const struct errgroup_error *e;
	struct rlimit limit;
	errgroup *g;
	char status = 2;

	if (getrlimit(RLIMIT_SIGPENDING, &limit) == 0) {
		limit.rlim_cur = 0;
		status = setrlimit(RLIMIT_SIGPENDING, &limit) == 0 ? 0 : 3;
	}
	g = errgroup_new();
	if (status == 0 && (!g || errgroup_go(g, return_arg, (void *)7) != 0))
		status = 4;
	if (status == 0) {
		e = errgroup_wait(g);
		status = e && e->cause == ERRGROUP_RETURNED && e->code == 7 ? 0 : 5;
	}
	errgroup_free(g);
	_exit(write(report_fd, &status, 1) == 1 ? status : 6);
}

/* Past the limit the kernel still delivers the parent's gate signal, but
 * without the sender's pid in its siginfo: the gate must open all the
 * same, or the task waits at it forever. */
static void test_gate_opens_past_the_users_pending_signal_limit(void **state)
{
	struct pollfd p = { .events = POLLIN };
	int fds[2], r, status;
	pid_t host;

	(void)state;
	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	fflush(NULL);   /* the host must not write the test's buffered output */
	host = fork();
	assert_true(host >= 0);
	if (host == 0)
		host_without_room_for_pending_signals(fds[1]);
	close(fds[1]);
	p.fd = fds[0];
	do
		r = poll(&p, 1, WAIT_LIMIT_MS);
	while (r < 0 && errno == EINTR);
	if (r != 1)
		kill(host, SIGKILL);   /* its task dies with it (the lifeline) */
	assert_int_equal(waitpid(host, &status, 0), host);
	close(fds[0]);
	assert_int_equal(r, 1);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_host_signal_state_is_reset_in_the_task(void **state)
{
	struct sigaction ignore, handler, old_term, old_usr1;
	const struct errgroup_error *e;
	sigset_t intr, old_mask;
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	memset(&ignore, 0, sizeof ignore);
	ignore.sa_handler = SIG_IGN;
	memset(&handler, 0, sizeof handler);
	handler.sa_handler = ignore_signal;
	sigemptyset(&intr);
	sigaddset(&intr, SIGINT);
	assert_int_equal(sigaction(SIGTERM, &ignore, &old_term), 0);
	assert_int_equal(sigaction(SIGUSR1, &handler, &old_usr1), 0);
	assert_int_equal(sigprocmask(SIG_BLOCK, &intr, &old_mask), 0);

	assert_int_equal(errgroup_go(g, report_signal_state, NULL), 0);
	e = errgroup_wait(g);

	sigprocmask(SIG_SETMASK, &old_mask, NULL);
	sigaction(SIGUSR1, &old_usr1, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	if (e)
		print_error("host signal state left in the task: %d (see report_signal_state)\n",
			    e->code);
	assert_null(e);
	errgroup_free(g);
}

/*
 * The child learns which dispositions to reset from /proc/self/stat
 * (cleanstart.c): fields 33 and 34, the ignored and caught signals,
 * counted from the last ')' because the command name, field 2, may hold
 * spaces and parentheses of its own.
 */
static void stat_line(char *buf, size_t size, const char *name, const char *ignored,
		      const char *caught, bool cut_after_ignored)
{
	size_t len = (size_t)snprintf(buf, size, "4242 (%s) S", name);

	for (int field = 4; field <= 52; field++) {
		const char *value = field == 33 ? ignored : field == 34 ? caught : "7";

		if (field == 34 && cut_after_ignored)
			break;
		len += (size_t)snprintf(buf + len, size - len, " %s", value);
	}
	snprintf(buf + len, size - len, "\n");
}

static void test_stat_parser_finds_the_signal_fields_after_the_name(void **state)
{
	char line[1024];
	uint64_t set = 0;

	(void)state;
	stat_line(line, sizeof line, "bench", "16384", "512", false);
	assert_true(stat_signals_set(line, &set));
	assert_true(set == (BIT(SIGTERM) | BIT(SIGUSR1)));

	stat_line(line, sizeof line, "a) b (c) 1 2", "2", "0", false);
	assert_true(stat_signals_set(line, &set));
	assert_true(set == BIT(SIGINT));

	stat_line(line, sizeof line, "x", "0", "0", false);
	assert_true(stat_signals_set(line, &set));
	assert_true(set == 0);

	/* A text cut short, or no name at all: the caller resets every
	 * signal instead. */
	stat_line(line, sizeof line, "x", "16384", "512", true);
	assert_false(stat_signals_set(line, &set));
	assert_false(stat_signals_set("4242 S 1 2 3", &set));
	assert_false(stat_signals_set("", &set));
}

/* A host whose name holds ") (", as a process may call itself: the task
 * still starts with its dispositions reset. */
static void test_host_signal_state_is_reset_whatever_the_host_is_called(void **state)
{
	char old_name[16] = "";

	assert_int_equal(prctl(PR_GET_NAME, old_name), 0);
	assert_int_equal(prctl(PR_SET_NAME, "t) 1 (2) 3 4 5"), 0);
	test_host_signal_state_is_reset_in_the_task(state);
	prctl(PR_SET_NAME, old_name);
}

/*
 * A host with SA_NOCLDWAIT on a default SIGCHLD: /proc lists SIGCHLD
 * neither ignored nor caught, but the flag would make the task's own
 * children vanish unwaited (its waitpid fails with ECHILD, system()
 * returns -1).  The child resets SIGCHLD whatever /proc says.  The task
 * reports on the pipe: the group itself may lose its exit status to the
 * flag (test_host_with_sa_nocldwait_still_gets_each_task_result).
 */
static int wait_for_own_child(void *arg)
{
	int status, seen = 1;
	pid_t pid;

	(void)arg;
	pid = fork();
	if (pid == 0)
		_exit(7);
	if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status))
		seen = WEXITSTATUS(status);
	tell_word(seen);
	return 0;
}

static void test_host_nocldwait_flag_does_not_reach_the_task(void **state)
{
	struct sigaction nocldwait, old;
	errgroup *g = errgroup_new();
	int seen;

	(void)state;
	assert_non_null(g);
	ready_pipe_open();
	memset(&nocldwait, 0, sizeof nocldwait);
	nocldwait.sa_handler = SIG_DFL;
	nocldwait.sa_flags = SA_NOCLDWAIT;
	assert_int_equal(sigaction(SIGCHLD, &nocldwait, &old), 0);
	assert_int_equal(errgroup_go(g, wait_for_own_child, NULL), 0);
	seen = await_word();
	errgroup_wait(g);
	sigaction(SIGCHLD, &old, NULL);
	errgroup_free(g);
	ready_pipe_close();
	assert_int_equal(seen, 7);   /* the task's child's exit status */
}

/* ---- the controlling terminal ---- */

/* Reads a line from its stdin, the host's terminal: 0 if it is "hello". */
static int read_hello_from_the_terminal(void *arg)
{
	char line[16] = "";
	ssize_t n;

	(void)arg;
	n = read(STDIN_FILENO, line, sizeof line - 1);
	return n == 6 && memcmp(line, "hello\n", 6) == 0 ? 0 : 5;
}

/*
 * A task runs in a process group of its own, in the background of the
 * host's terminal, where reading it (or a tcsetattr, a prompt on
 * /dev/tty) stops it with SIGTTIN, and nothing resumes it.  It has no
 * controlling terminal instead, so the terminal stops it for nothing.
 * The host leads a session whose terminal is a new pty, on its stdin, and
 * types the line before the task starts; the timeout only ends the run
 * when the task was stopped.
 */
static int host_whose_task_reads_its_terminal(void)
{
	const struct errgroup_error *e;
	int master, tty;
	errgroup *g;

	master = lead_a_session_on_a_new_pty(&tty);
	if (dup2(tty, STDIN_FILENO) < 0 || write(master, "hello\n", 6) != 6)
		return 2;
	g = errgroup_new();
	if (!g || errgroup_set_timeout_ms(g, WAIT_LIMIT_MS) < 0 ||
	    errgroup_set_grace_ms(g, 100) < 0 ||
	    errgroup_go(g, read_hello_from_the_terminal, NULL) < 0)
		return 3;
	e = errgroup_wait(g);
	return e ? 10 + (int)e->cause : 0;
}

static void test_task_reading_the_hosts_terminal_is_not_stopped(void **state)
{
	(void)state;
	assert_int_equal(status_in_child(host_whose_task_reads_its_terminal), 0);
}

/*
 * Until the child leads its own process group it is in the host's, and a
 * Ctrl-Z the terminal sends that group then waits in it, blocked; let
 * through once the task runs, it stopped the task for good, since the
 * SIGCONT that resumes the host's group no longer reaches it.  The host's
 * own atfork handler sends the child that SIGTSTP in exactly that moment
 * (glibc runs it in the child, with every signal still blocked).  The
 * timeout only ends the run when the task was stopped.
 */
static void stop_the_new_child(void)
{
	kill(getpid(), SIGTSTP);
}

static int host_whose_task_gets_a_ctrl_z_as_it_starts(void)
{
	const struct errgroup_error *e;
	errgroup *g;

	if (pthread_atfork(NULL, NULL, stop_the_new_child) != 0)
		return 2;
	g = errgroup_new();
	if (!g || errgroup_set_timeout_ms(g, WAIT_LIMIT_MS) < 0 ||
	    errgroup_set_grace_ms(g, 100) < 0 || errgroup_go(g, noop, NULL) < 0)
		return 3;
	e = errgroup_wait(g);
	return e ? 10 + (int)e->cause : 0;
}

static void test_terminal_stop_sent_as_a_task_starts_does_not_stop_it(void **state)
{
	(void)state;
	assert_int_equal(status_in_child(host_whose_task_gets_a_ctrl_z_as_it_starts), 0);
}

/* ---- atexit (stdio: test_stdio.c) ---- */

static int atexit_fd = -1;   /* where the host's atexit handler writes */

static void host_atexit_handler(void)
{
	if (atexit_fd >= 0 && write(atexit_fd, "A", 1) < 0)
		return;
}

static void test_host_atexit_handler_does_not_run_in_a_task(void **state)
{
	static bool registered;
	errgroup *g = errgroup_new();
	int p[2];
	char c;

	(void)state;
	assert_non_null(g);
	if (!registered) {
		assert_int_equal(atexit(host_atexit_handler), 0);
		registered = true;
	}
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	atexit_fd = p[1];
	assert_int_equal(errgroup_go(g, noop, NULL), 0);
	assert_int_equal(errgroup_go(g, return_arg, (void *)(intptr_t)5), 1);
	assert_int_equal(errgroup_wait(g)->code, 5);
	atexit_fd = -1;
	close(p[1]);

	/* Every child is gone: end of file, unless a handler wrote. */
	assert_int_equal(read(p[0], &c, 1), 0);
	close(p[0]);
	errgroup_free(g);
}

/* ---- a host that closed stdin, stdout and stderr ---- */

/*
 * A host that closed 0-2 (a daemon, say) leaves those numbers to whoever
 * opens next.  If the library took them, a function task, which keeps its
 * lifeline and the channel, would find one as its stdin or stdout, and the
 * host's own printf would write into a library fd (into a lifeline, it
 * kills the task).  The host and the task each report what is open on 0-2:
 * nothing, since the host opened nothing there itself.
 */

#define STDIO_RESULT 0x100   /* above 255: only the channel carries it */

/* The bits of what 0-2 hold, and their names after text. */
static int open_stdio(char *text, size_t size)
{
	char path[32], target[128];
	int open_bits = 0;

	for (int fd = 0; fd <= 2; fd++) {
		ssize_t n;

		if (fcntl(fd, F_GETFD) < 0)
			continue;
		open_bits |= 1 << fd;
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
		n = readlink(path, target, sizeof target - 1);
		target[n > 0 ? n : 0] = '\0';
		snprintf(text + strlen(text), size - strlen(text), " %d=%s", fd, target);
	}
	return open_bits;
}

/* Runs once the host has printed.  STDIO_RESULT, plus a bit for each of
 * 0-2 open, for a printf that went somewhere, for a read of stdin that
 * did not fail as a closed fd does. */
static int print_and_read_closed_stdio(void *arg)
{
	struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
	char names[512] = "", c;
	int result = STDIO_RESULT;

	(void)arg;
	if (read_byte(gate[0]) < 0)
		return 99;
	result |= open_stdio(names, sizeof names);
	printf("task output with nowhere to go\n");
	if (fflush(stdout) == 0)
		result |= 1 << 3;
	/* A library pipe as stdin would block the read: poll first.  A
	 * closed fd polls as POLLNVAL. */
	if (poll(&p, 1, 0) != 1 || read(STDIN_FILENO, &c, 1) >= 0 || errno != EBADF)
		result |= 1 << 4;
	return errgroup_errorf(result, "the task's stdio:%s", names);
}

struct stdio_report {
	int host_open_bits;         /* 0-2 open in the host after go() */
	char host_names[256];
	int cause, code;
	size_t errors;
	char message[512];
};

/* The forked host: closes 0-2 before or after making its group, runs the
 * task, prints as a careless daemon would, and reports. */
static _Noreturn void closed_stdio_host(int report_fd, bool group_first)
{
	struct stdio_report report;
	const struct errgroup_error *e;
	errgroup *g = NULL;

	memset(&report, 0, sizeof report);
	if (group_first)
		g = errgroup_new();
	for (int fd = 0; fd <= 2; fd++)
		close(fd);
	if (!group_first)
		g = errgroup_new();
	if (!g || errgroup_go(g, print_and_read_closed_stdio, NULL) != 0)
		_exit(2);
	report.host_open_bits = open_stdio(report.host_names, sizeof report.host_names);
	printf("host output after its stdio was closed\n");
	fflush(stdout);
	gate_open_n(gate[1], 1);
	e = errgroup_wait(g);
	report.errors = errgroup_error_count(g);
	if (e) {
		report.cause = e->cause;
		report.code = e->code;
		snprintf(report.message, sizeof report.message, "%s", e->message);
	}
	errgroup_free(g);
	_exit(write(report_fd, &report, sizeof report) == sizeof report ? 0 : 3);
}

static void run_closed_stdio_host(bool group_first, struct stdio_report *report)
{
	struct pollfd p = { .events = POLLIN };
	int fds[2], r, status;
	pid_t host;

	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	fflush(NULL);   /* the host must not write the test's buffered output */
	host = fork();
	assert_true(host >= 0);
	if (host == 0)
		closed_stdio_host(fds[1], group_first);
	close(fds[1]);
	p.fd = fds[0];
	do
		r = poll(&p, 1, WAIT_LIMIT_MS);
	while (r < 0 && errno == EINTR);
	if (r != 1)
		kill(host, SIGKILL);
	assert_int_equal(waitpid(host, &status, 0), host);
	assert_int_equal(r, 1);
	assert_int_equal(read(fds[0], report, sizeof *report), sizeof *report);
	close(fds[0]);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_library_fds_stay_off_0_to_2_when_the_host_closed_them(void **state)
{
	struct stdio_report reports[2];

	(void)state;
	pipes_open();
	/* Closed before the group is made, and after: a daemon that
	 * detaches from its terminal once it has set up. */
	for (int group_first = 0; group_first <= 1; group_first++) {
		struct stdio_report *r = &reports[group_first];

		run_closed_stdio_host(group_first, r);
		if (r->host_open_bits || r->errors != 1 || r->cause != ERRGROUP_RETURNED ||
		    r->code != STDIO_RESULT)
			print_error("group made %s closing: host's 0-2:%s; %zu errors, cause %d, code %#x: %s\n",
				    group_first ? "before" : "after", r->host_names,
				    r->errors, r->cause, r->code, r->message);
	}
	for (int i = 0; i < 2; i++) {
		assert_int_equal(reports[i].host_open_bits, 0);
		assert_int_equal(reports[i].errors, 1);
		assert_int_equal(reports[i].cause, ERRGROUP_RETURNED);
		assert_int_equal(reports[i].code, STDIO_RESULT);
		assert_string_equal(reports[i].message, "the task's stdio:");
	}
	pipes_close();
	assert_true(no_children_left());
}

/* ---- a host under a storm of signals ---- */

/*
 * A host whose handler has no SA_RESTART sees EINTR from every blocking
 * call its thread makes while a signal comes in.  A timer sends the test's
 * thread SIGUSR1 every STORM_INTERVAL_NS while it waits for one group and
 * frees another; the wait must still give every task's result, and free
 * must still reap every task, however often their waits are interrupted.
 * A timer rather than a sending thread: it fires whichever process holds
 * the CPUs, such as the tasks that free kills.
 */

#define STORM_TASKS 12
#define STORM_INTERVAL_NS 20000
#define STORM_SIGNALS_IN_WAIT 500

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid   /* glibc before 2.37 */
#endif

static volatile sig_atomic_t storm_handled;
static volatile sig_atomic_t storm_open_gate_at;   /* 0: not yet */

/* Lets the waited tasks end once the test has been interrupted often
 * enough, most of it in wait. */
static void count_storm_signal(int sig)
{
	char release[STORM_TASKS];
	int saved = errno;

	(void)sig;
	if (++storm_handled == storm_open_gate_at) {
		memset(release, 'x', sizeof release);
		if (write(gate[1], release, sizeof release) < 0)
			storm_open_gate_at = -1;
	}
	errno = saved;
}

/* Task i returns 300 + i for odd i, 0 for even: the codes need the
 * channel, which the parent drains between interruptions. */
static int storm_result(int i)
{
	return i % 2 ? 300 + i : 0;
}

static int return_storm_result_at_gate(void *arg)
{
	if (read_byte(gate[0]) < 0)
		return 99;
	return storm_result((int)(intptr_t)arg);
}

/* Blocks with memory of its own to unmap: its SIGKILL takes a while to
 * end it, and free waits meanwhile. */
static int block_forever_with_memory(void *arg)
{
	size_t size = 8 << 20;
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p != MAP_FAILED)
		memset(p, 1, size);
	return block_forever(arg);
}

static void test_signal_storm_loses_no_result_in_wait_and_no_child_in_free(void **state)
{
	struct sigevent sev = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGUSR1 };
	struct itimerspec every = { .it_interval.tv_nsec = STORM_INTERVAL_NS,
				    .it_value.tv_nsec = STORM_INTERVAL_NS };
	int fds_at_start = open_fd_count(), failed = 0, seen[STORM_TASKS] = { 0 };
	errgroup *waited = errgroup_new(), *freed = errgroup_new();
	struct sigaction sa, old;
	timer_t timer;
	size_t count;

	(void)state;
	assert_non_null(waited);
	assert_non_null(freed);
	pipes_open();
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = count_storm_signal;   /* no SA_RESTART */
	storm_handled = 0;
	storm_open_gate_at = 0;
	assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
	sev.sigev_notify_thread_id = gettid();
	assert_int_equal(timer_create(CLOCK_MONOTONIC, &sev, &timer), 0);
	assert_int_equal(timer_settime(timer, 0, &every, NULL), 0);

	for (int i = 0; i < STORM_TASKS; i++) {
		assert_int_equal(errgroup_go(waited, return_storm_result_at_gate, (void *)(intptr_t)i), i);
		assert_int_equal(errgroup_go(freed, block_forever_with_memory, NULL), i);
	}
	for (int i = 0; i < STORM_TASKS; i++)
		await_word();
	storm_open_gate_at = storm_handled + STORM_SIGNALS_IN_WAIT;
	assert_non_null(errgroup_wait(waited));
	errgroup_free(freed);

	/* A signal still pending is handled on the way out of this call,
	 * before the old disposition is back. */
	assert_int_equal(timer_delete(timer), 0);
	assert_int_equal(sigaction(SIGUSR1, &old, NULL), 0);
	assert_true(storm_handled >= STORM_SIGNALS_IN_WAIT);

	count = errgroup_error_count(waited);
	for (size_t i = 0; i < count; i++) {
		const struct errgroup_error *e = errgroup_error_at(waited, i);

		assert_true(e->task >= 0 && e->task < STORM_TASKS);
		if (e->cause != ERRGROUP_RETURNED || e->code != storm_result(e->task))
			print_error("task %d: cause %d code %d: %s\n", e->task, e->cause, e->code,
				    e->message);
		assert_int_equal(e->cause, ERRGROUP_RETURNED);
		assert_int_equal(e->code, storm_result(e->task));
		assert_int_equal(seen[e->task]++, 0);
	}
	for (int i = 0; i < STORM_TASKS; i++)
		failed += storm_result(i) != 0;
	assert_int_equal(count, failed);
	errgroup_free(waited);
	pipes_close();
	assert_true(no_children_left());
	assert_int_equal(open_fd_count(), fds_at_start);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		census_test(test_free_with_running_children_leaves_no_child_zombie_or_fd),
		census_test(test_free_null_is_a_noop),
		census_test(test_free_kills_a_running_child),
		census_test(test_task_sees_no_library_fd),
		census_test(test_task_sees_no_library_fd_while_four_threads_start_tasks),
		census_test(test_task_sees_no_library_fd_above_a_lowered_fd_limit),
		census_test(test_task_of_a_task_holds_no_fd_of_the_outer_group),
		census_test(test_child_the_host_forks_holds_no_library_fd),
		census_test(test_child_of_a_task_is_no_task_once_it_reuses_the_task_fd_numbers),
		census_test(test_task_that_closed_its_fds_keeps_its_own_files_under_the_numbers),
		census_test(test_task_that_reused_its_channel_number_gets_no_frame_in_its_own_socket),
		census_test(test_inherited_group_refuses_to_act_in_a_task),
		census_test(test_inherited_group_refuses_even_if_its_lock_was_held_at_fork),
		census_test(test_host_sigchld_handler_and_own_child_keep_working),
		census_test(test_host_ignoring_sigchld_still_gets_each_task_result),
		census_test(test_host_with_sa_nocldwait_still_gets_each_task_result),
		census_test(test_host_thread_reaping_any_child_still_gets_each_task_result),
		census_test(test_host_signal_state_is_reset_in_the_task),
		census_test(test_stray_gate_signal_neither_opens_the_gate_nor_kills_the_task),
		census_test(test_gate_opens_past_the_users_pending_signal_limit),
		census_test(test_stat_parser_finds_the_signal_fields_after_the_name),
		census_test(test_host_signal_state_is_reset_whatever_the_host_is_called),
		census_test(test_host_nocldwait_flag_does_not_reach_the_task),
		census_test(test_task_reading_the_hosts_terminal_is_not_stopped),
		census_test(test_terminal_stop_sent_as_a_task_starts_does_not_stop_it),
		census_test(test_host_atexit_handler_does_not_run_in_a_task),
		census_test(test_library_fds_stay_off_0_to_2_when_the_host_closed_them),
		census_test(test_signal_storm_loses_no_result_in_wait_and_no_child_in_free),
	};

	census_begin();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
