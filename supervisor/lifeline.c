/*
 * lifeline.c - how a child dies with the process that started it.
 *
 * Shared by both ways a task starts: a forked child that runs a function
 * (child.c) and a command started by clone (command.c).  It makes raw
 * system calls only (rawsyscall.c says why).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/*
 * The lifeline: when the pipe's write end, which only the parent process
 * holds, loses its last holder (the parent died, in any way, SIGKILL
 * included, or exec'd), the kernel signals the owner of the read end,
 * which we make our whole process group, with the signal we make SIGKILL.
 * Unlike PR_SET_PDEATHSIG it follows the parent process, not the thread
 * that forked us, and it reaches the task's own children too.  Nothing is
 * ever written to the pipe: a write would fire the signal as well (the
 * kernel wakes the reader before it signals, so not even a byte read
 * before arming is safe).  Returns false if the parent is already gone.
 */
CHILD_SHARING_MEMORY CHILD_CODE
bool lifeline_arm(int lifeline)
{
	struct pollfd p = { .fd = lifeline, .events = POLLIN };
	struct timespec now = { 0, 0 };
	long pid = raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0);

	/* Kept open across exec, so that a task that execs a program keeps
	 * its lifeline: the owner and signal belong to the open file. */
	if (raw_syscall(SYS_fcntl, lifeline, F_SETSIG, SIGKILL, 0, 0, 0) < 0 ||
	    raw_syscall(SYS_fcntl, lifeline, F_SETOWN, -pid, 0, 0, 0) < 0 ||
	    raw_syscall(SYS_fcntl, lifeline, F_SETFL, O_ASYNC, 0, 0, 0) < 0 ||
	    raw_syscall(SYS_fcntl, lifeline, F_SETFD, 0, 0, 0, 0) < 0)
		return true;   /* no lifeline, but the task can run */
	/* The parent may have died before the arming. */
	return raw_syscall(SYS_ppoll, (long)&p, 1, (long)&now, 0, 0, 0) == 0;
}
