/*
 * helpers.h - what the tests share.
 *
 * A cmocka assert that fails in a forked child jumps into the child's copy
 * of the test runner while the parent reports success, so tasks never
 * assert: they report through their return value, their exit status, a
 * pipe or shared memory, and only the parent asserts.  Tests synchronise
 * with pipes and shared memory, never with sleeps.
 */
#ifndef TESTS_HELPERS_H
#define TESTS_HELPERS_H

#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "errgroup.h"

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif

/* Memory that the test and its tasks share: counters a task can raise. */
static inline void *shared_alloc(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	assert_true(p != MAP_FAILED);
	memset(p, 0, size);
	return p;
}

static inline void shared_free(void *p, size_t size)
{
	munmap(p, size);
}

/* How many fds this process has open. */
static inline int open_fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;   /* the directory's own fd */
}

/* True when this process has no child at all, zombie or alive. */
static inline bool no_children_left(void)
{
	siginfo_t si;

	memset(&si, 0, sizeof si);
	return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD;
}

/* How many live children (zombies aside) this process has, from their
 * /proc entries: a child's ppid is the process, whichever of its threads
 * forked it.  -1 if /proc cannot be read.  Never asserts, so that a
 * forked scenario can use it. */
static inline int count_live_children(void)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		char path[sizeof "/proc//stat" + sizeof e->d_name], buf[512], *close_paren;
		int ppid = 0;
		char state;
		FILE *f;

		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		/* The command name may hold spaces and parentheses: the
		 * fields after it start at the last ')'. */
		if (fgets(buf, sizeof buf, f) && (close_paren = strrchr(buf, ')')) &&
		    sscanf(close_paren + 1, " %c %d", &state, &ppid) == 2 &&
		    ppid == getpid() && state != 'Z')
			n++;
		fclose(f);
	}
	closedir(d);
	return n;
}

/* A pipe a test can block tasks on: a task reads a byte from gate[0];
 * the test releases n tasks by writing n bytes to gate[1]. */
static inline void gate_open_n(int fd, int n)
{
	for (int i = 0; i < n; i++)
		assert_int_equal(write(fd, "x", 1), 1);
}

static inline int read_byte(int fd)
{
	char c;
	ssize_t r;

	do
		r = read(fd, &c, 1);
	while (r < 0 && errno == EINTR);
	return r == 1 ? (unsigned char)c : -1;
}

/* How long a test waits for what must happen: "never happened" on a
 * loaded machine, not a synchronisation. */
#ifndef WAIT_LIMIT_MS
#define WAIT_LIMIT_MS 30000
#endif

/* The soft RLIMIT_NOFILE below which exactly free_slots fd numbers are
 * free (the kernel refuses fd numbers at or above the limit). */
static inline rlim_t limit_leaving_free_fds(int free_slots)
{
	int found = 0;

	for (int fd = 0;; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		if (found == free_slots)
			return (rlim_t)fd;
		found++;
	}
}

/* Whether the library follows children through pidfds in this run, as
 * pidfd.c decides it: not when the runner forces the fallback, nor where
 * the kernel (or valgrind, with ENOSYS) refuses them. */
static inline bool pidfds_in_use(void)
{
	const char *off = getenv("ERRGROUP_DISABLE_PIDFD");
	int fd;

	if (off && *off && strcmp(off, "0") != 0)
		return false;
	fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* A pipe on which tasks send the test words (a pid, a result). */
static int ready_pipe[2];

static inline void ready_pipe_open(void)
{
	assert_int_equal(pipe2(ready_pipe, O_CLOEXEC), 0);
}

static inline void ready_pipe_close(void)
{
	close(ready_pipe[0]);
	close(ready_pipe[1]);
}

/* In a task: send the test a word. */
static inline void tell_word(int word)
{
	ssize_t n;

	do
		n = write(ready_pipe[1], &word, sizeof word);
	while (n < 0 && errno == EINTR);
}

/* In the test: the next word a task sent; fails after WAIT_LIMIT_MS. */
static inline int await_word(void)
{
	struct pollfd p = { .fd = ready_pipe[0], .events = POLLIN };
	int word = -1, r;
	ssize_t n;

	do
		r = poll(&p, 1, WAIT_LIMIT_MS);
	while (r < 0 && errno == EINTR);
	assert_int_equal(r, 1);
	do
		n = read(ready_pipe[0], &word, sizeof word);
	while (n < 0 && errno == EINTR);
	assert_int_equal(n, sizeof word);
	return word;
}

/* In the test: the next word a task sent, or 0 if the pipe life_rx hung
 * up first: a task that holds its only write end (from its fork) died
 * before it told one.  Fails after WAIT_LIMIT_MS. */
static inline int await_word_or_hangup(int life_rx)
{
	struct pollfd p[2] = {
		{ .fd = ready_pipe[0], .events = POLLIN },
		{ .fd = life_rx, .events = POLLIN },
	};
	int r;

	do
		r = poll(p, 2, WAIT_LIMIT_MS);
	while (r < 0 && errno == EINTR);
	assert_true(r > 0);
	return p[0].revents ? await_word() : 0;
}

/* What the tests that cannot run here exit with, in a child. */
#define SKIP_STATUS 77

/* Runs body in a child that exits with what it returns, and gives that
 * status; the test is skipped on SKIP_STATUS.  For a body that must be
 * a process of its own: a session leader, a process that never used the
 * library. */
static inline int status_in_child(int (*body)(void))
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0)
		_exit(body());
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == SKIP_STATUS)
		skip();
	return WEXITSTATUS(status);
}

/* In a child: makes it lead a new session whose controlling terminal is a
 * new pty.  Returns the pty's master, and its terminal in *tty; exits with
 * SKIP_STATUS where there are no ptys, with 2 on any other failure. */
static inline int lead_a_session_on_a_new_pty(int *tty)
{
	int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);

	if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0)
		_exit(SKIP_STATUS);
	/* The first terminal a session leader opens becomes its own. */
	if (setsid() < 0 || (*tty = open(ptsname(master), O_RDWR | O_CLOEXEC)) < 0)
		_exit(2);
	return master;
}

/* Under valgrind, signals and dispositions are partly valgrind's own. */
static inline bool under_valgrind(void)
{
#ifdef RUNNING_ON_VALGRIND
	return RUNNING_ON_VALGRIND;
#else
	return false;
#endif
}

/* Built with ASan or TSan: their malloc replaces glibc's, and their
 * forks are slow. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TESTS_UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TESTS_UNDER_SANITIZER 1
#endif
#endif

static inline bool under_sanitizer(void)
{
#ifdef TESTS_UNDER_SANITIZER
	return true;
#else
	return false;
#endif
}

#if defined(__SANITIZE_THREAD__)
#define TESTS_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TESTS_UNDER_TSAN 1
#endif
#endif

static inline bool under_tsan(void)
{
#ifdef TESTS_UNDER_TSAN
	return true;
#else
	return false;
#endif
}

/*
 * The census after every test (scenario 14 of the reliability notes):
 * nothing a test started may outlive it, as a zombie or alive.  Each test
 * binary makes itself a session leader first (census_begin), so that the
 * processes its tasks start, and theirs, orphans too, stay in its session
 * (unless they leave it with setsid: out of the library's reach, and the
 * README says so).  After each test census_teardown looks through /proc
 * for the session's other processes.  A zombie child is a process nobody
 * reaped.  A live one gets WAIT_LIMIT_MS to end, since one that the group
 * has just sent SIGKILL may still be dying, and is killed if it does not.
 * Either fails the test; what it finds is reaped or killed, so that the
 * next test starts clean.  Run where setsid is refused (the test process
 * already leads a process group, as in an interactive shell's job), the
 * session is the shell's, and the census looks at the test's own
 * children only.
 */
static pid_t census_session = -1;   /* the test's own session, or -1 */

static inline void census_begin(void)
{
	if (setsid() >= 0)
		census_session = getsid(0);
}

/* Fields 2 to 6 of /proc/PID/stat; false if it is gone. */
static inline bool proc_stat_fields(pid_t pid, char *state, pid_t *ppid, pid_t *session,
				    char *name, size_t name_size)
{
	char path[64], buf[512], *open_paren, *close_paren;
	int pgrp;
	FILE *f;
	bool ok;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	ok = fgets(buf, sizeof buf, f) && (open_paren = strchr(buf, '(')) &&
	     (close_paren = strrchr(buf, ')')) &&
	     sscanf(close_paren + 1, " %c %d %d %d", state, ppid, &pgrp, session) == 4;
	fclose(f);
	if (ok) {
		*close_paren = '\0';
		snprintf(name, name_size, "%s", open_paren + 1);
	}
	return ok;
}

/* What thread tid of this process is in, from /proc/self/task/TID/syscall:
 * the system call's number in *nr and its first arguments in args.  The
 * number of fields read (1 + arguments, up to 7); 0 while the thread runs
 * (the file says "running"), -1 if it cannot be read. */
static inline int read_thread_syscall(pid_t tid, long *nr, unsigned long long args[6])
{
	char path[64], buf[256];
	FILE *f;
	int n;

	snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	n = fgets(buf, sizeof buf, f) ? sscanf(buf, "%ld %llx %llx %llx %llx %llx %llx", nr,
					       &args[0], &args[1], &args[2], &args[3],
					       &args[4], &args[5]) : 0;
	fclose(f);
	return n < 0 ? 0 : n;
}

/* Waits up to WAIT_LIMIT_MS for pid to end; kills it if it does not.
 * False if it had to be killed. */
static inline bool ends_in_time(pid_t pid)
{
	struct pollfd p = { .events = POLLIN };
	int r;

	p.fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (p.fd < 0)
		return true;   /* gone already, or no pidfds (valgrind): not judged */
	do
		r = poll(&p, 1, WAIT_LIMIT_MS);
	while (r < 0 && errno == EINTR);
	if (r != 1)
		syscall(SYS_pidfd_send_signal, p.fd, SIGKILL, NULL, 0);
	close(p.fd);
	return r == 1;
}

static inline int census_teardown(void **state)
{
	pid_t self = getpid();
	int leftovers = 0;
	struct dirent *e;
	DIR *d;

	(void)state;
	d = opendir("/proc");
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		pid_t pid = (pid_t)atoi(e->d_name), ppid, session;
		char state_char, name[64];

		if (pid <= 0 || pid == self ||
		    !proc_stat_fields(pid, &state_char, &ppid, &session, name, sizeof name))
			continue;
		if (census_session >= 0 ? session != census_session : ppid != self)
			continue;
		if (state_char == 'Z' && ppid != self)
			continue;   /* its own parent, alive in the session, reaps it */
		if (state_char == 'Z') {
			print_error("census: zombie child %d (%s) left by the test\n", (int)pid, name);
			leftovers++;
		} else if (!ends_in_time(pid)) {
			print_error("census: process %d (%s, parent %d) outlived the test\n",
				    (int)pid, name, (int)ppid);
			leftovers++;
		}
		if (ppid == self)
			waitpid(pid, NULL, 0);
	}
	closedir(d);
	return leftovers ? -1 : 0;
}

/* A test with the census after it. */
#define census_test(name) cmocka_unit_test_teardown(name, census_teardown)

#endif
