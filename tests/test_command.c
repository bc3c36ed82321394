/*
 * test_command.c - errgroup_go_cmd: programs as tasks.  Their statuses,
 * programs that cannot be started, argv, environment, directory and stdio,
 * and the guarantees every task has: its own process group, default signal
 * dispositions and mask, no library fd, death with the calling process.
 *
 * The programs are the shell and coreutils that every Debian system has;
 * a program tells the test what it saw through a pipe given as its stdout.
 */
#include "helpers.h"

#include <limits.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/stat.h>

/* Runs argv as the group's only task and waits: the group's first error,
 * or NULL. */
static const struct errgroup_error *run(errgroup *g, const struct errgroup_cmd *cmd)
{
	assert_true(errgroup_go_cmd(g, cmd) >= 0);
	return errgroup_wait(g);
}

/* Everything a program wrote to the pipe; fd is the read end, whose write
 * end the test has closed. */
static char *read_all(int fd)
{
	static char buf[4096];
	size_t len = 0;
	ssize_t n;

	while ((n = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
		len += (size_t)n;
	buf[len] = '\0';
	return buf;
}

/* Runs argv with its stdout on a pipe; returns what it printed and sets
 * *error to the group's first error. */
static char *output_of(const char *const *argv, const struct errgroup_error **error)
{
	errgroup *g = errgroup_new();
	int out[2], stdio[3] = { -1, -1, -1 };
	struct errgroup_cmd cmd = { .argv = argv, .stdio = stdio };
	char *text;

	assert_non_null(g);
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	stdio[1] = out[1];
	assert_true(errgroup_go_cmd(g, &cmd) >= 0);
	close(out[1]);
	text = read_all(out[0]);
	close(out[0]);
	*error = errgroup_wait(g);
	/* The error lives as long as the group; copy what the tests need. */
	if (*error) {
		static struct errgroup_error copy;
		static char message[256];

		copy = **error;
		snprintf(message, sizeof message, "%s", (*error)->message);
		copy.message = message;
		*error = &copy;
	}
	errgroup_free(g);
	return text;
}

static void test_exit_status_is_the_result(void **state)
{
	const char *const ok[] = { "true", NULL };
	const char *const three[] = { "sh", "-c", "exit 3", NULL };
	const char *const killed[] = { "sh", "-c", "kill -SEGV $$", NULL };
	struct errgroup_cmd cmd = { .argv = ok };
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();

	(void)state;
	assert_null(run(g, &cmd));
	cmd.argv = three;
	e = run(g, &cmd);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_EXITED);
	assert_int_equal(e->code, 3);
	assert_int_equal(e->task, 1);
	assert_string_equal(e->message, "exited with status 3");
	cmd.argv = killed;
	assert_true(errgroup_go_cmd(g, &cmd) >= 0);
	errgroup_wait(g);
	assert_int_equal(errgroup_error_count(g), 2);
	e = errgroup_error_at(g, 1);
	assert_int_equal(e->cause, ERRGROUP_SIGNALED);
	assert_int_equal(e->code, SIGSEGV);
	errgroup_free(g);
	assert_true(no_children_left());
}

static void test_program_not_found_fails_with_127_and_names_it(void **state)
{
	const char *const missing[] = { "errgroup-test-no-such-program", NULL };
	const char *const missing_path[] = { "/nonexistent/errgroup-test", NULL };
	struct errgroup_cmd cmd = { .argv = missing };
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();

	(void)state;
	e = run(g, &cmd);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_EXITED);
	assert_int_equal(e->code, 127);
	assert_string_equal(e->message,
			    "cannot execute 'errgroup-test-no-such-program': No such file or directory");
	cmd.argv = missing_path;
	assert_true(errgroup_go_cmd(g, &cmd) >= 0);
	errgroup_wait(g);
	e = errgroup_error_at(g, 1);
	assert_int_equal(e->code, 127);
	assert_string_equal(e->message,
			    "cannot execute '/nonexistent/errgroup-test': No such file or directory");
	errgroup_free(g);
}

static void test_program_not_executable_fails_with_126(void **state)
{
	char dir[] = "/tmp/errgroup-test-XXXXXX", file[PATH_MAX], message[PATH_MAX + 64];
	const char *const argv[] = { file, NULL };
	struct errgroup_cmd cmd = { .argv = argv };
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(file, sizeof file, "%s/plain", dir);
	fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	close(fd);
	e = run(g, &cmd);
	assert_non_null(e);
	/* root may execute a file no one has the x bit for: never. */
	assert_int_equal(e->code, 126);
	snprintf(message, sizeof message, "cannot execute '%s': Permission denied", file);
	assert_string_equal(e->message, message);
	errgroup_free(g);
	unlink(file);
	rmdir(dir);
}

/* A script without "#!", which the kernel refuses (ENOEXEC), is run by
 * /bin/sh, as execvp() and xargs run it: given by its path, and found in
 * PATH. */
static void test_script_without_interpreter_line_runs_under_sh(void **state)
{
	char dir[] = "/tmp/errgroup-test-XXXXXX", file[PATH_MAX], path[2 * PATH_MAX];
	const char *const by_path[] = { file, "a", "b c", NULL };
	const char *const by_name[] = { "errgroup-script", "d", NULL };
	const char script[] = "echo \"$#:$1:$2\"\n";
	const struct errgroup_error *e;
	const char *old = getenv("PATH");
	char *saved = old ? strdup(old) : NULL, *text;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(file, sizeof file, "%s/errgroup-script", dir);
	fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0755);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, script, sizeof script - 1), (ssize_t)sizeof script - 1);
	close(fd);

	text = output_of(by_path, &e);
	assert_null(e);
	assert_string_equal(text, "2:a:b c\n");

	snprintf(path, sizeof path, "%s:%s", dir, saved ? saved : "/usr/bin:/bin");
	assert_int_equal(setenv("PATH", path, 1), 0);
	text = output_of(by_name, &e);
	if (saved)
		setenv("PATH", saved, 1);
	else
		unsetenv("PATH");
	free(saved);
	assert_null(e);
	assert_string_equal(text, "1:d:\n");
	unlink(file);
	rmdir(dir);
}

/*
 * Scenario 1: a program that cannot be started is a task like any other
 * once its child has reported why: reaped by wait (no zombie, even before
 * free), and neither its failure pipe nor its lifeline outlives it.  The
 * fds are counted between waits, while the group still lives, since free
 * would hide a leak of an fd the group keeps track of.
 */
static void test_failed_exec_leaves_no_zombie_and_no_fd(void **state)
{
	char dir[] = "/tmp/errgroup-test-XXXXXX", file[PATH_MAX];
	const char *const missing[] = { "/nonexistent/errgroup-test", NULL };
	const char *const not_executable[] = { file, NULL };
	const char *const *programs[] = { missing, not_executable };
	int fds_before = open_fd_count(), fds_in_group = -1, fd;
	errgroup *g;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(file, sizeof file, "%s/plain", dir);
	fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	close(fd);

	g = errgroup_new();
	assert_non_null(g);
	for (int round = 0; round < 10; round++) {
		for (size_t i = 0; i < 2; i++) {
			struct errgroup_cmd cmd = { .argv = programs[i] };

			assert_true(errgroup_go_cmd(g, &cmd) >= 0);
		}
		assert_non_null(errgroup_wait(g));
		assert_true(no_children_left());
		if (fds_in_group < 0)
			fds_in_group = open_fd_count();
		assert_int_equal(open_fd_count(), fds_in_group);
	}
	assert_int_equal(errgroup_error_count(g), 20);
	for (size_t i = 0; i < 20; i++) {
		const struct errgroup_error *e = errgroup_error_at(g, i);

		assert_int_equal(e->code, e->task % 2 ? 126 : 127);
	}
	errgroup_free(g);
	assert_true(no_children_left());
	assert_int_equal(open_fd_count(), fds_before);
	unlink(file);
	rmdir(dir);
}

static void test_missing_directory_fails_with_127_and_names_it(void **state)
{
	const char *const argv[] = { "true", NULL };
	struct errgroup_cmd cmd = { .argv = argv, .dir = "/nonexistent/dir" };
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();

	(void)state;
	e = run(g, &cmd);
	assert_non_null(e);
	assert_int_equal(e->code, 127);
	assert_string_equal(e->message,
			    "cannot change directory to '/nonexistent/dir': No such file or directory");
	errgroup_free(g);
}

static void test_argv_reaches_the_program_unsplit(void **state)
{
	const char *const argv[] = { "printf", "[%s]", "a; rm x", "b c", "", NULL };
	const struct errgroup_error *e;

	(void)state;
	assert_string_equal(output_of(argv, &e), "[a; rm x][b c][]");
	assert_null(e);
}

static void test_environment_and_directory_are_the_given_ones(void **state)
{
	const char *const argv[] = { "sh", "-c", "printf '%s %s' \"$ERRGROUP_TEST\" \"$(pwd)\"", NULL };
	const char *const envp[] = { "ERRGROUP_TEST=given", NULL };
	errgroup *g = errgroup_new();
	int out[2], stdio[3] = { -1, -1, -1 };
	struct errgroup_cmd cmd = { .argv = argv, .envp = envp, .dir = "/usr", .stdio = stdio };

	(void)state;
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	stdio[1] = out[1];
	assert_true(errgroup_go_cmd(g, &cmd) >= 0);
	close(out[1]);
	assert_string_equal(read_all(out[0]), "given /usr");
	close(out[0]);
	assert_null(errgroup_wait(g));
	errgroup_free(g);
}

/* stdout and stderr swapped: each source is one of the other's targets. */
static void test_stdio_may_swap_the_callers_fds(void **state)
{
	const char *const argv[] = { "sh", "-c", "echo out; echo err >&2", NULL };
	int out[2], err[2], saved1, saved2, stdio[3] = { -1, 2, 1 };
	struct errgroup_cmd cmd = { .argv = argv, .stdio = stdio };
	errgroup *g = errgroup_new();

	(void)state;
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	assert_int_equal(pipe2(err, O_CLOEXEC), 0);
	fflush(stdout);
	saved1 = dup(1);
	saved2 = dup(2);
	dup2(out[1], 1);
	dup2(err[1], 2);
	assert_true(errgroup_go_cmd(g, &cmd) >= 0);
	dup2(saved1, 1);
	dup2(saved2, 2);
	close(saved1);
	close(saved2);
	close(out[1]);
	close(err[1]);
	assert_null(errgroup_wait(g));
	/* The program's stdout went to the caller's fd 2, and so on. */
	assert_string_equal(read_all(err[0]), "out\n");
	assert_string_equal(read_all(out[0]), "err\n");
	close(out[0]);
	close(err[0]);
	errgroup_free(g);
}

/* Stdio fd numbers the caller had closed, and which the library's own
 * pipes for this very start have taken since, fail as any closed fd does:
 * the program never gets the library's pipes (its output would be taken
 * for an exec failure, and a write to the lifeline fires its SIGKILL). */
static void test_stdio_fd_that_names_a_library_fd_fails_as_closed(void **state)
{
	const char *const argv[] = { "sh", "-c", "echo out; echo err >&2", NULL };
	const char *const quiet[] = { "true", NULL };
	int stale[2], stdio[3] = { -1, -1, -1 };
	struct errgroup_cmd warm = { .argv = quiet }, cmd = { .argv = argv, .stdio = stdio };
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	/* The group's own fds exist once it has run a task. */
	assert_null(run(g, &warm));
	/* The lowest free numbers: the next start's first pipe takes them. */
	assert_int_equal(pipe2(stale, O_CLOEXEC), 0);
	close(stale[0]);
	close(stale[1]);
	stdio[1] = stale[0];
	stdio[2] = stale[1];
	e = run(g, &cmd);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_EXITED);
	assert_int_equal(e->code, 126);
	assert_non_null(strstr(e->message, "Bad file descriptor"));
	errgroup_free(g);
}

/* A closed stdio fd fails the start even when another stdio fd is one of
 * 0..2, which the child first moves up to the lowest free number: that
 * may be the closed one's, which the program then got as a copy of the
 * other (found by session 16's hunt).  Which number the move takes
 * depends on how many fds the library makes first, so each of the 16
 * lowest free numbers is tried. */
static void test_closed_stdio_fd_fails_while_another_is_moved_up(void **state)
{
	const char *const argv[] = { "true", NULL };
	int stdio[3] = { -1, STDERR_FILENO, -1 }, tried = 0;
	struct errgroup_cmd cmd = { .argv = argv, .stdio = stdio };
	const struct errgroup_error *e;

	(void)state;
	for (int fd = 3; tried < 16; fd++) {
		errgroup *g;

		if (fcntl(fd, F_GETFD) >= 0)
			continue;   /* open here: not a closed fd */
		tried++;
		g = errgroup_new();   /* a fresh one: the first error sticks */
		assert_non_null(g);
		stdio[2] = fd;
		e = run(g, &cmd);
		if (!e)
			fail_msg("stdio fd %d, closed, was taken for another", fd);
		assert_int_equal(e->cause, ERRGROUP_EXITED);
		assert_int_equal(e->code, 126);
		assert_non_null(strstr(e->message, "Bad file descriptor"));
		errgroup_free(g);
	}
}

/* With stdio NULL the program gets the caller's 0, 1 and 2 as exec would
 * give them: one the caller marked O_CLOEXEC is closed in it (the header
 * says so).  The host's stdout is a pipe it marked so; the program finds
 * its stdout closed, and nothing reaches the pipe. */
static int host_whose_stdout_is_cloexec(void)
{
	const char *const argv[] = { "sh", "-c", "echo into the pipe", NULL };
	struct errgroup_cmd cmd = { .argv = argv };
	const struct errgroup_error *e;
	int out[2], r;
	char byte;
	errgroup *g;

	if (pipe2(out, O_CLOEXEC) < 0 || dup3(out[1], STDOUT_FILENO, O_CLOEXEC) < 0)
		return 2;
	close(out[1]);
	g = errgroup_new();
	if (!g || errgroup_go_cmd(g, &cmd) < 0)
		return 3;
	e = errgroup_wait(g);
	r = !e ? 4 : e->cause != ERRGROUP_EXITED || e->code == 0 ? 5 : 0;
	errgroup_free(g);
	close(STDOUT_FILENO);
	if (r == 0 && read(out[0], &byte, 1) != 0)
		r = 6;
	return r;
}

static void test_program_gets_the_callers_stdio_as_exec_would(void **state)
{
	(void)state;
	assert_int_equal(status_in_child(host_whose_stdout_is_cloexec), 0);
}

static void test_program_leads_its_own_process_group(void **state)
{
	/* Field 5 of /proc/PID/stat is the process group (procps, for ps, is
	 * not on every Debian system). */
	const char *const argv[] = { "sh", "-c", "echo $$ $(cut -d' ' -f5 /proc/$$/stat)", NULL };
	const struct errgroup_error *e;
	int pid = 0, pgid = -1;

	(void)state;
	assert_int_equal(sscanf(output_of(argv, &e), "%d %d", &pid, &pgid), 2);
	assert_null(e);
	assert_int_equal(pid, pgid);
}

/* A program has no controlling terminal: in its background process group
 * a prompt on /dev/tty (ssh, sudo) would stop it with SIGTTIN, and the
 * group would wait for ever.  The host leads a session whose terminal is a
 * new pty; the program must fail to open /dev/tty. */
static int host_whose_program_opens_the_terminal(void)
{
	const char *const argv[] = { "sh", "-c", "exec 2>/dev/null 3</dev/tty", NULL };
	struct errgroup_cmd cmd = { .argv = argv };
	const struct errgroup_error *e;
	errgroup *g;
	int tty;

	lead_a_session_on_a_new_pty(&tty);
	if (open("/dev/tty", O_RDONLY | O_CLOEXEC) < 0)
		return 2;
	g = errgroup_new();
	if (!g || errgroup_go_cmd(g, &cmd) < 0)
		return 3;
	e = errgroup_wait(g);
	return e && e->cause == ERRGROUP_EXITED && e->code != 0 ? 0 : 1;
}

static void test_program_has_no_controlling_terminal(void **state)
{
	(void)state;
	assert_int_equal(status_in_child(host_whose_program_opens_the_terminal), 0);
}

/* The host ignores SIGTERM and blocks SIGINT: the program must see
 * neither.  grep reads its own /proc entry. */
static void test_program_starts_with_default_signals_and_empty_mask(void **state)
{
	const char *const argv[] = { "grep", "^Sig\\(Blk\\|Ign\\)", "/proc/self/status", NULL };
	struct sigaction ignore = { .sa_handler = SIG_IGN }, old_term;
	const struct errgroup_error *e;
	sigset_t block, old_mask;
	char *text;

	(void)state;
	if (under_valgrind())
		skip();   /* valgrind keeps dispositions of its own */
	sigaction(SIGTERM, &ignore, &old_term);
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	pthread_sigmask(SIG_BLOCK, &block, &old_mask);
	text = output_of(argv, &e);
	pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	assert_null(e);
	assert_string_equal(text, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

/* The fds a program of ours inherits: those without O_CLOEXEC. */
static int inheritable_fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0, fd;

	assert_non_null(d);
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		fd = atoi(e->d_name);
		if (fd != dirfd(d) && !(fcntl(fd, F_GETFD) & FD_CLOEXEC))
			n++;
	}
	closedir(d);
	return n;
}

/* Only the host's inheritable fds and the lifeline: none of the group's
 * (channel, epoll, eventfd, other tasks' pidfds and pipes), though a
 * sibling runs. */
static void test_program_holds_no_library_fd(void **state)
{
	const char *const argv[] = { "ls", "/proc/self/fd", NULL };
	const char *const sleeper[] = { "sleep", "1000", NULL };
	struct errgroup_cmd sibling = { .argv = sleeper };
	int out[2], stdio[3] = { -1, -1, -1 }, count = 0;
	struct errgroup_cmd cmd = { .argv = argv, .stdio = stdio };
	errgroup *g = errgroup_new();
	char *text, *line;

	(void)state;
	assert_true(errgroup_go_cmd(g, &sibling) >= 0);
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	stdio[1] = out[1];
	assert_true(errgroup_go_cmd(g, &cmd) >= 0);
	close(out[1]);
	text = read_all(out[0]);
	close(out[0]);
	for (line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
		count++;
	/* ls's own fd on the directory is listed too; its stdout is one of
	 * the host's 0, 1, 2. */
	assert_int_equal(count, inheritable_fd_count() + 2);
	errgroup_cancel(g);
	errgroup_wait(g);
	errgroup_free(g);
}

static void test_cancel_stops_a_program_and_its_children(void **state)
{
	/* The shell forks sleep and waits: both are in the program's group. */
	const char *const argv[] = { "sh", "-c", "sleep 1000; exit 0", NULL };
	struct errgroup_cmd cmd = { .argv = argv };
	const struct errgroup_error *e;
	errgroup *g = errgroup_new();

	(void)state;
	assert_int_equal(errgroup_go_cmd(g, &cmd), 0);
	errgroup_cancel(g);
	e = errgroup_wait(g);
	assert_non_null(e);
	assert_int_equal(e->cause, ERRGROUP_CANCELED);
	assert_int_equal(e->code, SIGTERM);
	assert_int_equal(errgroup_go_cmd(g, &cmd), -ECANCELED);
	errgroup_free(g);
	assert_true(no_children_left());
}

static void test_bad_arguments_are_refused(void **state)
{
	const char *const empty[] = { NULL };
	struct errgroup_cmd cmd = { .argv = NULL };
	errgroup *g = errgroup_new();

	(void)state;
	assert_int_equal(errgroup_go_cmd(g, NULL), -EINVAL);
	assert_int_equal(errgroup_go_cmd(g, &cmd), -EINVAL);
	cmd.argv = empty;
	assert_int_equal(errgroup_try_go_cmd(g, &cmd), -EINVAL);
	assert_null(errgroup_wait(g));
	errgroup_free(g);
}

static void test_try_go_cmd_refuses_at_the_limit(void **state)
{
	const char *const sleeper[] = { "sleep", "1000", NULL };
	struct errgroup_cmd cmd = { .argv = sleeper };
	errgroup *g = errgroup_new();

	(void)state;
	assert_int_equal(errgroup_set_limit(g, 1), 0);
	assert_int_equal(errgroup_try_go_cmd(g, &cmd), 0);
	assert_int_equal(errgroup_try_go_cmd(g, &cmd), -EAGAIN);
	errgroup_free(g);
	assert_true(no_children_left());
}

/*
 * The calling process dies by SIGKILL: the program and what it started
 * die too.  A helper process runs the group; the program's shell hands its
 * pid over an fd the helper left open for it, then waits on a grandchild.
 */
static void test_program_dies_with_the_calling_process(void **state)
{
	int report[2], word_len, pidfd;
	struct pollfd p;
	char script[128];
	pid_t helper, program = 0;

	(void)state;
	assert_int_equal(pipe(report), 0);   /* no O_CLOEXEC: the program writes it */
	snprintf(script, sizeof script, "echo $$ >&%d; sleep 1000", report[1]);
	helper = fork();
	assert_true(helper >= 0);
	if (helper == 0) {
		const char *const argv[] = { "sh", "-c", script, NULL };
		struct errgroup_cmd cmd = { .argv = argv };
		errgroup *g = errgroup_new();

		close(report[0]);
		if (!g || errgroup_go_cmd(g, &cmd) < 0)
			_exit(1);
		for (;;)
			pause();
	}
	close(report[1]);
	word_len = (int)read(report[0], script, sizeof script - 1);
	assert_true(word_len > 0);
	script[word_len] = '\0';
	program = atoi(script);
	assert_true(program > 0);
	/* The program is not our child: only its pidfd tells when it ends. */
	pidfd = pidfd_open(program, 0);
	kill(helper, SIGKILL);
	waitpid(helper, NULL, 0);
	close(report[0]);
	if (pidfd < 0)
		skip();   /* valgrind has no pidfds; the lifeline still ran */
	p = (struct pollfd){ .fd = pidfd, .events = POLLIN };
	assert_int_equal(poll(&p, 1, WAIT_LIMIT_MS), 1);
	close(pidfd);
}

/*
 * K6: a program is started with CLONE_VM | CLONE_VFORK, not fork(), so
 * the caller's memory is neither copied nor write-protected, however
 * large.  fork() would write-protect every page of the caller's heap, and
 * the caller's next write to each would take a page fault: the fault
 * count after rewriting 64 MiB tells the two apart without timing
 * anything.  Under valgrind (which makes a vfork a fork) and the
 * sanitizers (TSan needs a copy) the start is a fork by design.
 */
static void test_starting_a_program_leaves_the_callers_memory_alone(void **state)
{
	static const char *const argv[] = { "true", NULL };
	const size_t size = 64u << 20, pages = size / 4096;
	struct errgroup_cmd cmd = { .argv = argv };
	struct rusage before, after;
	errgroup *g;
	long faults;
	char *mem;

	(void)state;
	if (under_valgrind() || under_sanitizer())
		skip();
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(mem != MAP_FAILED);
	/* Small pages: a huge one would take one fault for 512 pages. */
	madvise(mem, size, MADV_NOHUGEPAGE);
	memset(mem, 1, size);
	g = errgroup_new();
	assert_non_null(g);

	getrusage(RUSAGE_SELF, &before);
	assert_null(run(g, &cmd));
	memset(mem, 2, size);
	getrusage(RUSAGE_SELF, &after);
	faults = after.ru_minflt - before.ru_minflt;
	print_message("%ld page faults rewriting %zu pages after a program ran\n", faults, pages);
	assert_true(faults < (long)pages / 8);

	errgroup_free(g);
	munmap(mem, size);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		census_test(test_exit_status_is_the_result),
		census_test(test_program_not_found_fails_with_127_and_names_it),
		census_test(test_program_not_executable_fails_with_126),
		census_test(test_script_without_interpreter_line_runs_under_sh),
		census_test(test_failed_exec_leaves_no_zombie_and_no_fd),
		census_test(test_missing_directory_fails_with_127_and_names_it),
		census_test(test_argv_reaches_the_program_unsplit),
		census_test(test_environment_and_directory_are_the_given_ones),
		census_test(test_stdio_may_swap_the_callers_fds),
		census_test(test_stdio_fd_that_names_a_library_fd_fails_as_closed),
		census_test(test_closed_stdio_fd_fails_while_another_is_moved_up),
		census_test(test_program_gets_the_callers_stdio_as_exec_would),
		census_test(test_program_leads_its_own_process_group),
		census_test(test_program_has_no_controlling_terminal),
		census_test(test_program_starts_with_default_signals_and_empty_mask),
		census_test(test_program_holds_no_library_fd),
		census_test(test_cancel_stops_a_program_and_its_children),
		census_test(test_bad_arguments_are_refused),
		census_test(test_try_go_cmd_refuses_at_the_limit),
		census_test(test_program_dies_with_the_calling_process),
		census_test(test_starting_a_program_leaves_the_callers_memory_alone),
	};

	census_begin();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
