/*
 * lifeline.c - how a child dies with the process that started it.
 *
 * Shared by both ways a task starts: a forked child that runs a function
 * (child.c) and a command started by clone (command.c).  It makes raw
 * system calls, not libc's wrappers, because a command's child shares the
 * parent's memory until it execs: a sanitizer's interceptor there would
 * update the parent's bookkeeping.
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
CHILD_SHARING_MEMORY
bool lifeline_arm(int lifeline)
{
	struct pollfd p = { .fd = lifeline, .events = POLLIN };
	struct timespec now = { 0, 0 };
	long pid = syscall(SYS_getpid);

	/* Kept open across exec, so that a task that execs a program keeps
	 * its lifeline: the owner and signal belong to the open file. */
	if (syscall(SYS_fcntl, lifeline, F_SETSIG, SIGKILL) < 0 ||
	    syscall(SYS_fcntl, lifeline, F_SETOWN, -pid) < 0 ||
	    syscall(SYS_fcntl, lifeline, F_SETFL, O_ASYNC) < 0 ||
	    syscall(SYS_fcntl, lifeline, F_SETFD, 0) < 0)
		return true;   /* no lifeline, but the task can run */
	/* The parent may have died before the arming. */
	return syscall(SYS_ppoll, &p, 1, &now, NULL, 0) == 0;
}
