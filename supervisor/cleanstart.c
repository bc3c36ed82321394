/*
 * cleanstart.c - what every child does first, whichever way it started
 * (a forked function task, child.c, or a cloned command, command.c): lead
 * its own process group, drop the terminal's stops it got while it was
 * still in the host's, leave the controlling terminal and reset the
 * signal dispositions the host set.
 *
 * Raw system calls only (rawsyscall.c says why), and no libc at all.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>

#include "internal.h"

/* The kernel's struct sigaction.  Only an all-zero one is passed (SIG_DFL,
 * no flags, an empty mask), which means the same whatever the order of the
 * fields on the architecture. */
struct kernel_sigaction {
	unsigned long handler, flags, restorer;
	uint64_t mask;
};

/* The 64-bit mask that follows "\nNAME:\t" in a /proc status text, in
 * hex, in *ret; false if there is none.  No libc: see above. */
CHILD_SHARING_MEMORY CHILD_CODE
static bool status_mask(const char *text, const char *name, uint64_t *ret)
{
	for (const char *line = text; *line; line++) {
		const char *p = line, *q = name;
		uint64_t mask = 0;
		int digits = 0;

		if (line != text && line[-1] != '\n')
			continue;
		while (*q && *p == *q)
			p++, q++;
		if (*q || *p++ != ':' || *p++ != '\t')
			continue;
		for (;; p++, digits++) {
			if (*p >= '0' && *p <= '9')
				mask = mask << 4 | (uint64_t)(*p - '0');
			else if (*p >= 'a' && *p <= 'f')
				mask = mask << 4 | (uint64_t)(*p - 'a' + 10);
			else
				break;
		}
		if (digits != 16)
			return false;
		*ret = mask;
		return true;
	}
	return false;
}

/* Reads what the file at path holds into text (NUL-terminated); false if
 * it cannot. */
CHILD_SHARING_MEMORY CHILD_CODE
static bool read_text(const char *path, char *text, size_t size)
{
	long fd, n;

	fd = raw_syscall(SYS_openat, AT_FDCWD, (long)path, O_RDONLY | O_CLOEXEC, 0, 0, 0);
	if (fd < 0)
		return false;
	n = raw_syscall(SYS_read, fd, (long)text, (long)(size - 1), 0, 0, 0);
	raw_syscall(SYS_close, fd, 0, 0, 0, 0, 0);
	if (n <= 0)
		return false;
	text[n] = '\0';
	return true;
}

/* The decimal number that starts at p; false if there is none, or if the
 * text ends right after it (it may have been cut). */
CHILD_SHARING_MEMORY CHILD_CODE
static bool decimal_at(const char *p, uint64_t *ret)
{
	uint64_t n = 0;
	const char *start = p;

	while (*p >= '0' && *p <= '9')
		n = n * 10 + (uint64_t)(*p++ - '0');
	if (p == start || *p != ' ')
		return false;
	*ret = n;
	return true;
}

/* "/proc/self/stat", stored by the code itself: a string constant would
 * be on a page of the library's that a forked child has not read yet, and
 * reading it would cost a fault.  Through a volatile pointer, or the
 * compiler merges the stores into a copy of just such a constant. */
CHILD_SHARING_MEMORY CHILD_CODE
static void stat_path(char *path)
{
	volatile char *p = path;

	p[0] = '/', p[1] = 'p', p[2] = 'r', p[3] = 'o', p[4] = 'c', p[5] = '/';
	p[6] = 's', p[7] = 'e', p[8] = 'l', p[9] = 'f', p[10] = '/';
	p[11] = 's', p[12] = 't', p[13] = 'a', p[14] = 't', p[15] = '\0';
}

/*
 * Signals 1-31 that are ignored or caught (bit n-1 for signal n), from the
 * text of /proc/PID/stat: its fields 33 and 34, counted from the last ')'
 * since the command name may hold anything.  False if the text has no
 * such fields (or may have been cut in the middle of them).
 */
CHILD_SHARING_MEMORY CHILD_CODE
bool stat_signals_set(const char *text, uint64_t *ret)
{
	const char *p = NULL;
	uint64_t ignored, caught;
	int field = 2;

	for (const char *q = text; *q; q++)
		if (*q == ')')
			p = q;
	for (; p && *p && field < 33; p++)
		if (*p == ' ')
			field++;
	if (!p || !decimal_at(p, &ignored))
		return false;
	while (*p != ' ')
		p++;
	if (!decimal_at(p + 1, &caught))
		return false;
	*ret = ignored | caught;
	return true;
}

/* From this process's /proc/self/stat, which is short enough for a small
 * buffer: each stack page a forked child writes costs it a fault. */
CHILD_SHARING_MEMORY CHILD_CODE __attribute__((noinline))
static bool classic_signals_set(uint64_t *ret)
{
	char path[16], text[512];

	stat_path(path);
	return read_text(path, text, sizeof text) && stat_signals_set(text, ret);
}

/* All 64 signals' worth, from /proc/thread-self/status.  Only commands
 * need the real-time ones, and their child shares the parent's memory, so
 * this costs no faults. */
CHILD_SHARING_MEMORY CHILD_CODE __attribute__((noinline))
static bool all_signals_set(uint64_t *ret)
{
	char text[2048];
	uint64_t ignored, caught;

	if (!read_text("/proc/thread-self/status", text, sizeof text) ||
	    !status_mask(text, "SigIgn", &ignored) || !status_mask(text, "SigCgt", &caught))
		return false;
	*ret = ignored | caught;
	return true;
}

/*
 * The signals up to last_signal whose disposition is not SIG_DFL, from the
 * kernel's own account: an open, a read and a close instead of a sigaction
 * per signal (29 or 62 calls, each a few times the cost of a read,
 * docs/benchmarks.md).  Every signal when /proc cannot tell.
 */
CHILD_SHARING_MEMORY CHILD_CODE
static uint64_t signals_set(int last_signal)
{
	uint64_t set;

	if (last_signal <= 31 ? classic_signals_set(&set) : all_signals_set(&set))
		return set;
	return ~UINT64_C(0);
}

/* "/dev/tty", stored by the code itself, as stat_path does. */
CHILD_SHARING_MEMORY CHILD_CODE
static void tty_path(char *path)
{
	volatile char *p = path;

	p[0] = '/', p[1] = 'd', p[2] = 'e', p[3] = 'v', p[4] = '/';
	p[5] = 't', p[6] = 't', p[7] = 'y', p[8] = '\0';
}

/*
 * A task runs in its own process group, in the background of the caller's
 * controlling terminal, where the terminal stops it: SIGTTIN when it reads
 * it (a prompt on /dev/tty, as ssh and sudo make), SIGTTOU when it sets
 * its modes or writes to it under `stty tostop`.  Nothing resumes it, and
 * the group waits for ever.  So a task has no controlling terminal: a
 * prompt fails at once (no /dev/tty), and a terminal among its fds works
 * as any file.  A process that leads no session drops its terminal alone
 * with TIOCNOTTY; a new session (setsid) would also put it in a scheduling
 * autogroup of its own.  Without a terminal the open fails (ENXIO), the
 * one call this costs a daemon's tasks.
 */
CHILD_SHARING_MEMORY CHILD_CODE
static void leave_terminal(void)
{
	char path[9];
	long fd;

	tty_path(path);
	fd = raw_syscall(SYS_openat, AT_FDCWD, (long)path,
			 O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC, 0, 0, 0);
	if (fd < 0)
		return;
	raw_syscall(SYS_ioctl, fd, TIOCNOTTY, 0, 0, 0, 0);
	raw_syscall(SYS_close, fd, 0, 0, 0, 0, 0);
}

/* Takes every signal of set (bit n - 1 for signal n) that is pending, and
 * drops it; they are blocked.  The gate's sweep uses it too (child.c). */
CHILD_SHARING_MEMORY CHILD_CODE
void drop_pending_signals(uint64_t set)
{
	struct timespec now = { 0, 0 };
	long n;

	do
		n = raw_syscall(SYS_rt_sigtimedwait, (long)&set, 0, (long)&now, sizeof set, 0, 0);
	while (n > 0 || n == -EINTR);
}

/*
 * The group signals the task's process group; until this call it signals
 * the child alone, which has no descendants yet.  Dispositions the host
 * set (an ignored SIGTERM, a SIGINT handler) would make cancellation fail
 * or run host code in the task: every signal up to last_signal that has
 * one goes back to SIG_DFL, and SIGCHLD always.  A function task stops
 * at 31, since glibc keeps 32 and 33 for its threads; a command resets
 * them all, as exec would not reset ignored ones.
 */
CHILD_SHARING_MEMORY CHILD_CODE
void clean_start(int last_signal)
{
	struct kernel_sigaction dfl = { 0 };
	uint64_t set;

	raw_syscall(SYS_setpgid, 0, 0, 0, 0, 0, 0);
	/* Until now the child was in the caller's process group, and a stop
	 * the terminal sent that group meanwhile (Ctrl-Z's SIGTSTP, or
	 * SIGTTIN, SIGTTOU) waits here.  Once the mask is cleared it would
	 * stop the child for good: the SIGCONT that resumes the caller's
	 * group no longer reaches it, and the group would wait for ever (a
	 * command's caller in clone, holding the fd registry's lock).  The
	 * child is in no job the terminal controls: such a stop is dropped. */
	drop_pending_signals(UINT64_C(1) << (SIGTSTP - 1) | UINT64_C(1) << (SIGTTIN - 1) |
			     UINT64_C(1) << (SIGTTOU - 1));
	leave_terminal();
	/* SIGCHLD's flags (SA_NOCLDWAIT, SA_NOCLDSTOP) change how the task's
	 * own children end even under SIG_DFL, and /proc does not show them:
	 * it is always reset. */
	set = signals_set(last_signal) | UINT64_C(1) << (SIGCHLD - 1);
	for (int sig = 1; sig <= last_signal; sig++)
		if (sig != SIGKILL && sig != SIGSTOP && (set >> (sig - 1) & 1))
			raw_syscall(SYS_rt_sigaction, sig, (long)&dfl, 0, sizeof dfl.mask, 0, 0);
}
