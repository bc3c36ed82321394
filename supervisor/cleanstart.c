/*
 * cleanstart.c - what every child does first, whichever way it started
 * (a forked function task, child.c, or a cloned command, command.c): lead
 * its own process group and reset the signal dispositions the host set.
 *
 * Raw system calls through syscall(), for two reasons.  A command's child
 * shares its parent's memory until it execs, where a sanitizer's
 * interceptor would write the parent's books.  And a forked child has not
 * mapped libc's text: fork copies no page tables for file mappings, so
 * the first call to each libc wrapper costs the child a page fault that
 * maps 16 pages around it (about 2 us each, docs/benchmarks.md), while
 * syscall() is one function that the lifeline (lifeline.c) needs anyway.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* The kernel's struct sigaction.  Only an all-zero one is passed (SIG_DFL,
 * no flags, an empty mask), which means the same whatever the order of the
 * fields on the architecture. */
struct kernel_sigaction {
	unsigned long handler, flags, restorer;
	uint64_t mask;
};

/*
 * The group signals the task's process group; until this call it signals
 * the child alone, which has no descendants yet.  Dispositions the host
 * set (an ignored SIGTERM, a SIGINT handler) would make cancellation fail
 * or run host code in the task: every signal below last_signal goes back
 * to SIG_DFL.  A function task stops at 31, since glibc keeps 32 and 33
 * for its threads; a command resets them all, as exec would not reset
 * ignored ones.
 */
CHILD_SHARING_MEMORY
void clean_start(int last_signal)
{
	struct kernel_sigaction dfl = { 0 };

	syscall(SYS_setpgid, 0, 0);
	for (int sig = 1; sig <= last_signal; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof dfl.mask);
}
