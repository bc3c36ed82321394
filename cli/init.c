/*
 * init.c - errgroup as PID 1 of a pid namespace: a minimal init in front
 * of the command.
 *
 * A container's entrypoint without an init (`docker run IMAGE errgroup
 * ...`, no --init) is PID 1, and every process orphaned in the namespace
 * becomes its child: what the library's leftover kill leaves of a job, a
 * daemon a job started.  Nothing reaped them.  The library reaps only its
 * tasks, through their pidfds, never with waitpid(-1), and the command
 * cannot reap "every child but a task" without taking a task's status
 * from the library.  The zombies piled up until a pids cgroup refused the
 * jobs their forks.
 *
 * So PID 1 forks before it does anything else, and the child runs the
 * command as it would anywhere, with the signal state errgroup was
 * started with.  PID 1, as tini or docker --init, only reaps, passes on
 * the signals sent to it (docker stop's SIGTERM), and exits with the
 * command's status once the command has ended; the kernel then kills
 * whatever is left in the namespace.
 *
 * The command stays in PID 1's process group, so what the terminal sends
 * that group (Ctrl-C, Ctrl-\, Ctrl-Z, SIGWINCH) reaches it directly: PID 1
 * passes on the signals a process sent (SI_USER, SI_QUEUE, SI_TKILL), not
 * the kernel's (SI_KERNEL), or the command would take a Ctrl-C for a
 * second one and kill the jobs at once; the one exception is the hangup
 * (passed_on).  PID 1 does not stop itself: an init that stopped would
 * reap nothing.  A SIGTSTP, SIGTTIN or SIGTTOU sent to it is passed on,
 * so the command suspends its jobs and itself, and a SIGCONT sent to it
 * resumes them.  (A SIGSTOP from outside the namespace does stop PID 1,
 * and the command runs on.)  PID 1 leaves with _exit: what the command's
 * process set up at exit is the command's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

/* The status a shell would give for the command's end: PID 1 cannot die
 * of a signal it raises on itself, so a killed command is 128+N. */
static int shell_status(int wait_status)
{
	if (WIFSIGNALED(wait_status))
		return 128 + WTERMSIG(wait_status);
	return WEXITSTATUS(wait_status);
}

/* Reaps every child that has ended: the command's shell status if it is
 * one of them, else -1. */
static int reap_children(pid_t command)
{
	int wait_status, command_status = -1;
	pid_t pid;

	while ((pid = waitpid(-1, &wait_status, WNOHANG)) > 0)
		if (pid == command)
			command_status = shell_status(wait_status);
	return command_status;
}

/*
 * What PID 1 passes on: what a process sent it, and, when PID 1 leads the
 * session (docker run -t, setsid -c), the terminal's hangup: the kernel
 * sends that SIGHUP and SIGCONT to the session leader alone, and the
 * command, which leads none, would never hear of it.  Not the terminal's
 * other signals, which go to the whole foreground process group, the
 * command included.
 */
static bool passed_on(const siginfo_t *info, bool leads_session)
{
	if (info->si_code == SI_USER || info->si_code == SI_QUEUE || info->si_code == SI_TKILL)
		return true;
	return leads_session && info->si_code == SI_KERNEL &&
	       (info->si_signo == SIGHUP || info->si_signo == SIGCONT);
}

/*
 * Every signal but SIGKILL and SIGSTOP is blocked and taken here.  The
 * command's pid cannot be reused while PID 1 runs: it is PID 1's child,
 * and PID 1 exits as soon as it has reaped it.
 */
static _Noreturn void be_init(pid_t command, const sigset_t *taken)
{
	bool leads_session = getsid(0) == getpid();
	siginfo_t info;
	int status;

	for (;;) {
		if (sigwaitinfo(taken, &info) < 0)
			continue;   /* EINTR */
		if (info.si_signo == SIGCHLD) {
			status = reap_children(command);
			if (status >= 0)
				_exit(status);
		} else if (passed_on(&info, leads_session)) {
			kill(command, info.si_signo);
		}
	}
}

void init_if_pid_1(void)
{
	struct sigaction child_default = { .sa_handler = SIG_DFL }, started_chld;
	sigset_t all, started_mask;
	pid_t pid;

	if (getpid() != 1)
		return;
	/* Blocked before the fork, so that no signal is lost in between;
	 * blocked, a signal reaches an init even at its default. */
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &started_mask);
	/* Ignored, or with SA_NOCLDWAIT, SIGCHLD would let the kernel reap
	 * the command, and its status would be lost. */
	sigaction(SIGCHLD, &child_default, &started_chld);
	pid = fork();
	if (pid < 0) {
		warn("cannot fork the command from PID 1: %s", strerror(errno));
		_exit(EXIT_USAGE);
	}
	if (pid > 0)
		be_init(pid, &all);
	sigaction(SIGCHLD, &started_chld, NULL);
	sigprocmask(SIG_SETMASK, &started_mask, NULL);
}
