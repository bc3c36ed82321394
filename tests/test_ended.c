/*
 * test_ended.c - errgroup_fd and errgroup_reap: every task's end, success
 * included, in the order the tasks ended, behind an fd that is readable
 * exactly while ends wait to be taken.
 *
 * Tasks are released one at a time through their own pipes, so the order
 * in which they end is the test's to choose.
 */
#include "helpers.h"

#define TASKS 3

static int gates[TASKS][2];

static int setup(void **state)
{
	(void)state;
	ready_pipe_open();
	for (int i = 0; i < TASKS; i++)
		if (pipe2(gates[i], O_CLOEXEC) < 0)
			return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	ready_pipe_close();
	for (int i = 0; i < TASKS; i++) {
		close(gates[i][0]);
		close(gates[i][1]);
	}
	return 0;
}

static bool readable(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int r;

	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	return r == 1;
}

/* Task i waits for its gate, then ends as the byte it reads says. */
static int gated(void *arg)
{
	int i = (int)(intptr_t)arg;

	switch (read_byte(gates[i][0])) {
	case 's':
		return 0;
	case 'r':
		return 3;
	case 'k':
		raise(SIGSEGV);
		return 1;
	default:
		return 99;
	}
}

static int succeed(void *arg)
{
	(void)arg;
	return 0;
}

/* Lets task i end as how says, and takes its end from the queue. */
static void end_and_reap(errgroup *g, int fd, int i, char how, struct errgroup_exit *x)
{
	assert_int_equal(write(gates[i][1], &how, 1), 1);
	assert_true(readable(fd, WAIT_LIMIT_MS));
	assert_int_equal(errgroup_reap(g, x), 1);
	assert_int_equal(x->task, i);
}

static void test_reap_before_fd_is_refused(void **state)
{
	errgroup *g = errgroup_new();
	struct errgroup_exit x;

	(void)state;
	assert_int_equal(errgroup_reap(g, &x), -EINVAL);
	errgroup_free(g);
}

static void test_every_end_is_reported_in_order_with_its_status(void **state)
{
	errgroup *g = errgroup_new();
	struct errgroup_exit x;
	int fd;

	(void)state;
	fd = errgroup_fd(g);
	assert_true(fd >= 0);
	assert_int_equal(errgroup_fd(g), fd);
	for (int i = 0; i < TASKS; i++)
		assert_int_equal(errgroup_go(g, gated, (void *)(intptr_t)i), i);
	assert_false(readable(fd, 0));
	assert_int_equal(errgroup_reap(g, &x), 0);

	end_and_reap(g, fd, 2, 'r', &x);
	assert_true(WIFEXITED(x.status));
	assert_int_equal(WEXITSTATUS(x.status), 3);
	assert_non_null(x.error);
	assert_ptr_equal(x.error, errgroup_error_at(g, 0));
	assert_int_equal(x.error->cause, ERRGROUP_RETURNED);
	assert_true(x.pid > 0);
	/* Taken: the fd is no longer readable. */
	assert_false(readable(fd, 0));

	end_and_reap(g, fd, 0, 's', &x);
	assert_true(WIFEXITED(x.status));
	assert_int_equal(WEXITSTATUS(x.status), 0);
	assert_null(x.error);

	end_and_reap(g, fd, 1, 'k', &x);
	assert_true(WIFSIGNALED(x.status));
	assert_int_equal(WTERMSIG(x.status), SIGSEGV);
	assert_ptr_equal(x.error, errgroup_error_at(g, 1));

	assert_int_equal(errgroup_reap(g, &x), 0);
	assert_false(readable(fd, 0));
	errgroup_wait(g);
	errgroup_free(g);
}

/* Ends that pile up stay readable until the last one is taken. */
static void test_fd_stays_readable_until_the_queue_is_empty(void **state)
{
	errgroup *g = errgroup_new();
	struct errgroup_exit x;
	int fd = errgroup_fd(g);
	bool seen[4] = { false };

	(void)state;
	for (int i = 0; i < 4; i++)
		assert_int_equal(errgroup_go(g, succeed, NULL), i);
	assert_null(errgroup_wait(g));
	for (int i = 0; i < 4; i++) {
		assert_true(readable(fd, 0));
		assert_int_equal(errgroup_reap(g, &x), 1);
		assert_false(seen[x.task]);
		seen[x.task] = true;
		assert_int_equal(x.status, 0);
	}
	assert_false(readable(fd, 0));
	assert_int_equal(errgroup_reap(g, &x), 0);
	errgroup_free(g);
}

/* A task started before the caller asked still reports its end. */
static void test_task_started_before_fd_is_reported(void **state)
{
	errgroup *g = errgroup_new();
	struct errgroup_exit x;
	int fd;

	(void)state;
	assert_int_equal(errgroup_go(g, gated, (void *)(intptr_t)0), 0);
	fd = errgroup_fd(g);
	end_and_reap(g, fd, 0, 's', &x);
	assert_null(x.error);
	errgroup_free(g);
}

/* The queue's entries are the group's: free releases those not taken
 * (valgrind would count a leak). */
static void test_free_releases_ends_not_taken(void **state)
{
	int before = open_fd_count(), with_group;
	errgroup *g = errgroup_new();

	(void)state;
	with_group = open_fd_count();
	assert_true(errgroup_fd(g) >= 0);
	assert_int_equal(open_fd_count(), with_group + 1);
	for (int i = 0; i < 3; i++)
		assert_int_equal(errgroup_go(g, succeed, NULL), i);
	assert_int_equal(errgroup_go(g, gated, (void *)(intptr_t)0), 3);
	assert_int_equal(write(gates[0][1], "r", 1), 1);
	errgroup_wait(g);
	errgroup_free(g);
	assert_int_equal(open_fd_count(), before);
	assert_true(no_children_left());
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		census_test(test_reap_before_fd_is_refused),
		census_test(test_every_end_is_reported_in_order_with_its_status),
		census_test(test_fd_stays_readable_until_the_queue_is_empty),
		census_test(test_task_started_before_fd_is_reported),
		census_test(test_free_releases_ends_not_taken),
	};

	census_begin();
	return cmocka_run_group_tests(tests, setup, teardown);
}
