/*
 * test_first_use.c - the process's first group, made in one thread while
 * another forks: the fork must see each of the group's fds either
 * registered (and close it in the child) or not yet made.
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		census_test(test_fork_while_the_first_group_is_made_leaks_no_fd),
	};

	census_begin();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
