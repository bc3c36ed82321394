/*
 * command.c - errgroup_go_cmd: a program as a task.
 *
 * The child is made by clone() with CLONE_VM and CLONE_VFORK, as
 * posix_spawn makes it: it runs on a small stack of its own in the
 * parent's memory, and the calling thread sleeps until it has exec'd or
 * died.  No page table is copied, so the start costs the same in a host
 * with a large heap as in a small one.  CLONE_PIDFD gives the pidfd in the
 * same system call, so the child cannot end, and be reaped by someone
 * else, before the group holds it: no start gate is needed, and a program
 * sends no frames, so nothing needs it to be in the pid tree first.
 *
 * The child shares the parent's memory, so it may touch nothing the parent
 * relies on: it makes raw system calls only (rawsyscall.c: libc's wrappers
 * would run a sanitizer's interceptors, which keep per-process books in
 * that shared memory, and set the parent thread's errno), writes only to
 * its own struct launch, and takes no lock.  All
 * signals are blocked around the clone, so that no host handler runs in
 * it; it resets every disposition before it unblocks them.  The library's
 * fds are all O_CLOEXEC, so exec closes them: no atfork handler is needed,
 * and none runs.  Why the program could not be started travels back on a
 * pipe that exec closes: shared memory would do under CLONE_VM, but
 * valgrind turns this clone into a fork.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* The child's stack, in the parent's frame (the parent sleeps while the
 * child runs): the child calls nothing deep. */
#define CHILD_STACK_SIZE 16384

/* TSan's clone() interceptor treats every clone as a fork: it resets its
 * books in the child, which under CLONE_VM are the parent's.  Under TSan
 * the child is therefore a plain copy, which is what TSan expects. */
#if defined(__SANITIZE_THREAD__)
#define CLONE_SHARING 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CLONE_SHARING 0
#endif
#endif
#ifndef CLONE_SHARING
#define CLONE_SHARING (CLONE_VM | CLONE_VFORK)
#endif

/* What the child could not do. */
enum stage { STAGE_SETUP = 1, STAGE_DIR, STAGE_EXEC };

struct failure {
	int stage;
	int error;
};

/* What the child needs, prepared by the parent: the child calls no libc
 * function, not even strlen, since a sanitizer intercepts those. */
struct launch {
	const struct errgroup_cmd *cmd;
	char *const *envp;
	char **files;               /* where to look for the program, in order */
	char **script_argv;         /* /bin/sh, the file, the arguments */
	int lifeline;               /* the lifeline's read end */
	int report;                 /* the failure pipe's write end */
	bool stdio_stale;           /* a stdio fd names one of the library's */
};

CHILD_SHARING_MEMORY
static _Noreturn void child_fail(const struct launch *l, enum stage stage, int error)
{
	struct failure f = { stage, error };
	bool missing = error == ENOENT || error == ENOTDIR;

	raw_syscall(SYS_write, l->report, (long)&f, sizeof f, 0, 0, 0);
	raw_syscall(SYS_exit_group, stage != STAGE_SETUP && missing ? 127 : 126, 0, 0, 0, 0, 0);
	__builtin_unreachable();
}

/* Moves fd out of 0..2, which the program's stdio will take; closes the
 * old number, which the caller had not opened for the program.  Returns
 * the new fd or -errno. */
CHILD_SHARING_MEMORY
static int move_up(int fd, bool cloexec)
{
	long r;

	if (fd > 2)
		return fd;
	r = raw_syscall(SYS_fcntl, fd, cloexec ? F_DUPFD_CLOEXEC : F_DUPFD, 3, 0, 0, 0);
	if (r >= 0)
		raw_syscall(SYS_close, fd, 0, 0, 0, 0, 0);
	return (int)r;
}

/* Makes fds 0, 1 and 2 what the caller asked for.  A source that is
 * itself one of 0..2 is first moved up, so that no target overwrites a
 * source still to be used (stdout and stderr swapped, say).  Every source
 * is checked first: the move takes the lowest free number, which may be
 * that of a source the caller had closed, and the program would then run
 * with a copy of another.  Returns 0 or -errno. */
CHILD_SHARING_MEMORY
static int set_stdio(const int *stdio)
{
	int src[3];
	long r;

	for (int i = 0; i < 3; i++)
		if (stdio[i] >= 0 && (r = raw_syscall(SYS_fcntl, stdio[i], F_GETFD, 0, 0, 0, 0)) < 0)
			return (int)r;
	for (int i = 0; i < 3; i++) {
		src[i] = stdio[i];
		if (src[i] >= 0 && src[i] < 3 && src[i] != i) {
			r = raw_syscall(SYS_fcntl, src[i], F_DUPFD_CLOEXEC, 3, 0, 0, 0);
			if (r < 0)
				return (int)r;
			src[i] = (int)r;
		}
	}
	for (int i = 0; i < 3; i++) {
		if (src[i] < 0)
			continue;
		/* dup3 clears O_CLOEXEC on the copy; an fd already in place
		 * needs it cleared by hand. */
		r = src[i] == i ? raw_syscall(SYS_fcntl, i, F_SETFD, 0, 0, 0, 0) :
				  raw_syscall(SYS_dup3, src[i], i, 0, 0, 0, 0);
		if (r < 0)
			return (int)r;
	}
	return 0;
}

/*
 * Tries each candidate file in turn, as execvpe() does.  EACCES on one is
 * remembered, as shells do, so that "found but not executable" is not
 * reported as "not found".  A file the kernel cannot run (ENOEXEC: a
 * script without "#!") is run by /bin/sh, as execvp(), xargs and shells
 * run it.  Returns the error.
 */
CHILD_SHARING_MEMORY
static int exec_program(const struct launch *l)
{
	char *const *argv = (char *const *)l->cmd->argv;
	bool denied = false;
	int error = ENOENT;

	for (char *const *file = l->files; *file; file++) {
		error = (int)-raw_syscall(SYS_execve, (long)*file, (long)argv, (long)l->envp, 0, 0, 0);
		if (error == ENOEXEC) {
			l->script_argv[1] = *file;
			raw_syscall(SYS_execve, (long)l->script_argv[0], (long)l->script_argv,
				    (long)l->envp, 0, 0, 0);
			return ENOEXEC;
		}
		if (error == EACCES)
			denied = true;
		else if (error != ENOENT && error != ENOTDIR && error != ENAMETOOLONG)
			return error;
	}
	return denied ? EACCES : error;
}

CHILD_SHARING_MEMORY
static int launch_child(void *arg)
{
	struct launch *l = arg;
	uint64_t none = 0;
	int r;

	/* Exec would reset the caught signals, but a signal taken before it
	 * would run a host handler in the parent's memory. */
	clean_start(_NSIG - 1);
	r = move_up(l->report, true);
	if (r < 0)
		child_fail(l, STAGE_SETUP, -r);
	l->report = r;
	r = move_up(l->lifeline, false);
	if (r < 0)
		child_fail(l, STAGE_SETUP, -r);
	l->lifeline = r;
	if (!lifeline_arm(l->lifeline))
		raw_syscall(SYS_exit_group, 127, 0, 0, 0, 0, 0);
	if (l->stdio_stale)
		child_fail(l, STAGE_SETUP, EBADF);
	if (l->cmd->stdio && (r = set_stdio(l->cmd->stdio)) < 0)
		child_fail(l, STAGE_SETUP, -r);
	if (l->cmd->dir && (r = (int)raw_syscall(SYS_chdir, (long)l->cmd->dir, 0, 0, 0, 0, 0)) < 0)
		child_fail(l, STAGE_DIR, -r);
	raw_syscall(SYS_rt_sigprocmask, SIG_SETMASK, (long)&none, 0, sizeof none, 0, 0);
	child_fail(l, STAGE_EXEC, exec_program(l));
}

/*
 * The files to try for a program, as execvpe() would: the name itself if
 * it has a '/', else the name in each directory of the caller's PATH (an
 * empty entry is the current directory).  One allocation, NULL-terminated;
 * NULL if out of memory.
 */
static char **program_files(const char *name)
{
	const char *path = getenv("PATH"), *dir, *end;
	size_t entries = 1, name_len = strlen(name), size;
	char **files, *p;
	int n = 0;

	if (strchr(name, '/') || name_len == 0) {
		files = malloc(2 * sizeof *files);
		if (files) {
			files[0] = (char *)name;
			files[1] = NULL;
		}
		return files;
	}
	if (!path)
		path = "/bin:/usr/bin";
	for (dir = path; *dir; dir++)
		entries += *dir == ':';
	size = (entries + 1) * sizeof *files + strlen(path) + entries * (name_len + 2);
	files = malloc(size);
	if (!files)
		return NULL;
	p = (char *)(files + entries + 1);
	for (dir = path;; dir = end + 1) {
		end = strchrnul(dir, ':');
		files[n++] = p;
		if (end > dir) {
			memcpy(p, dir, (size_t)(end - dir));
			p += end - dir;
			*p++ = '/';
		}
		memcpy(p, name, name_len + 1);
		p += name_len + 1;
		if (*end == '\0')
			break;
	}
	files[n] = NULL;
	return files;
}

/* The arguments for /bin/sh to run the program as a script: its file
 * (filled in by the child) and the program's own arguments.  NULL if out
 * of memory. */
static char **script_argv(const char *const *argv)
{
	size_t argc = 0;
	char **sh;

	while (argv[argc])
		argc++;
	sh = malloc((argc + 2) * sizeof *sh);
	if (!sh)
		return NULL;
	sh[0] = (char *)"/bin/sh";
	sh[1] = NULL;
	memcpy(sh + 2, argv + 1, argc * sizeof *sh);   /* argv[1..], and the NULL */
	return sh;
}

/* The message a task that could not start fails with; NULL if out of
 * memory (it then fails with the plain description of its status). */
static char *describe_failure(const struct errgroup_cmd *cmd, const struct failure *f)
{
	char buf[256], *text = NULL;
	const char *reason = strerror_r(f->error, buf, sizeof buf);
	int n;

	switch (f->stage) {
	case STAGE_DIR:
		n = asprintf(&text, "cannot change directory to '%s': %s", cmd->dir, reason);
		break;
	case STAGE_SETUP:
		n = asprintf(&text, "cannot set up the fds of '%s': %s", cmd->argv[0], reason);
		break;
	default:
		n = asprintf(&text, "cannot execute '%s': %s", cmd->argv[0], reason);
		break;
	}
	return n < 0 ? NULL : text;
}

/*
 * Whether a stdio fd the caller gave is the number of one of the
 * library's, the two pipes of this very start included: then the caller
 * gave a number it had closed, which ours took since.  Made the program's
 * stdout, the report pipe would take its output for an exec failure and
 * hold go_cmd until the program ends, and the lifeline would SIGKILL it
 * at its first write.  It fails instead, as with any closed fd (EBADF).
 * fdreg_lock held, so that no other thread's start changes the books.
 */
static bool stdio_names_ours(const int *stdio)
{
	if (!stdio)
		return false;
	for (int i = 0; i < 3; i++)
		if (fdreg_holds_locked(stdio[i]))
			return true;
	return false;
}

int spawn_command(errgroup *g, const void *what, struct task *t)
{
	_Alignas(16) char stack[CHILD_STACK_SIZE];
	const struct errgroup_cmd *cmd = what;
	int lifeline[2], report[2], flags, pidfd = -1, pidfds, r;
	struct failure f;
	struct launch l;
	sigset_t all, saved;
	ssize_t n;
	pid_t pid;

	(void)g;
	pidfds = pidfd_supported();
	if (pidfds < 0)
		return pidfds;
	r = fdreg_pipe(lifeline);
	if (r < 0)
		return r;
	r = fdreg_pipe(report);
	if (r < 0) {
		fdreg_close(lifeline[0]);
		fdreg_close(lifeline[1]);
		return r;
	}
	l.cmd = cmd;
	l.envp = cmd->envp ? (char *const *)cmd->envp : environ;
	l.files = program_files(cmd->argv[0]);
	l.script_argv = script_argv(cmd->argv);
	if (!l.files || !l.script_argv) {
		free(l.files);
		free(l.script_argv);
		fdreg_close(lifeline[0]);
		fdreg_close(lifeline[1]);
		fdreg_close(report[0]);
		fdreg_close(report[1]);
		return -ENOMEM;
	}
	l.lifeline = lifeline[0];
	l.report = report[1];

	flags = CLONE_SHARING | SIGCHLD;
	if (pidfds)
		flags |= CLONE_PIDFD;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &saved);
	fdreg_lock();
	l.stdio_stale = stdio_names_ours(cmd->stdio);
	pid = clone(launch_child, stack + sizeof stack, flags, &l, &pidfd);
	r = -errno;
	if (pid > 0 && pidfd >= 0) {
		pidfd = fdreg_adopt_locked(pidfd);
		if (pidfd < 0)
			r = pidfd;
	}
	fdreg_unlock();
	pthread_sigmask(SIG_SETMASK, &saved, NULL);
	fdreg_close(lifeline[0]);
	fdreg_close(report[1]);
	free(l.files);
	free(l.script_argv);
	if (pid > 0 && (flags & CLONE_PIDFD) && pidfd < 0) {
		abort_child(pid, -1);
		pid = -1;
	}
	if (pid < 0) {
		fdreg_close(report[0]);
		fdreg_close(lifeline[1]);
		return r;
	}

	/* EOF once the program runs: exec closed the write end.  Under
	 * valgrind's fork this waits for the exec. */
	do
		n = read(report[0], &f, sizeof f);
	while (n < 0 && errno == EINTR);
	fdreg_close(report[0]);
	if (n == (ssize_t)sizeof f)
		t->message = describe_failure(cmd, &f);
	t->pid = pid;
	t->pidfd = pidfd;
	t->lifeline = lifeline[1];
	return 0;
}

EXPORT int errgroup_go_cmd(errgroup *g, const struct errgroup_cmd *cmd)
{
	if (!cmd || !cmd->argv || !cmd->argv[0])
		return -EINVAL;
	return start_task(g, spawn_command, cmd, true);
}

EXPORT int errgroup_try_go_cmd(errgroup *g, const struct errgroup_cmd *cmd)
{
	if (!cmd || !cmd->argv || !cmd->argv[0])
		return -EINVAL;
	return start_task(g, spawn_command, cmd, false);
}
