/*
 * pidfd.c - what the kernel offers for pidfds, found out at run time.
 *
 * Headers tell what the library was built against, not what it runs on:
 * Debian 12's valgrind answers ENOSYS to pidfd_open and pidfd_send_signal,
 * seccomp filters answer ENOSYS or EPERM, and PIDFD_SIGNAL_PROCESS_GROUP
 * (6.9) and PIDFD_INFO_EXIT (6.15) are newer than the installed headers.
 * Each feature is probed once and the answer cached (pidfds themselves
 * again after a probe that ran out of fds).  Without pidfds the
 * group falls back to pids, which stay ours until we reap them (see
 * poll.c for how exits are noticed then).  ERRGROUP_DISABLE_PIDFD=1 in the
 * environment forces that fallback, so that tests can cover it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#ifndef PIDFD_SIGNAL_PROCESS_GROUP
#define PIDFD_SIGNAL_PROCESS_GROUP (1U << 2)
#endif

/* PIDFD_GET_INFO (6.13), as in <linux/pidfd.h> of newer kernels.  The
 * kernel accepts the first, 64-byte version of the struct. */
struct pidfd_info_v0 {
	uint64_t mask;
	uint64_t cgroupid;
	uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
	int32_t exit_code;          /* a wait status, as waitid would give */
};
#define PIDFD_GET_INFO_V0 _IOWR(0xFF, 11, struct pidfd_info_v0)
#define PIDFD_INFO_EXIT_BIT (1ULL << 3)

/* 1 once pidfds were found to work, -1 once they were found not to, 0
 * until then. */
static int pidfd_state;
static bool have_group_flag = true;   /* cleared at the first EINVAL */

/* 1 if pidfds work, 0 if not, or -EMFILE, -ENFILE, -ENOMEM when the probe
 * ran out of fds or memory, which says nothing of the kernel. */
static int probe(void)
{
	const char *off = secure_getenv("ERRGROUP_DISABLE_PIDFD");
	siginfo_t si;
	bool works;
	int fd;

	if (off && *off && strcmp(off, "0") != 0)
		return 0;
	/* Registered, as every library fd: a task that another thread forks
	 * meanwhile must not inherit a pidfd of the host. */
	fd = fdreg_pidfd_open(getpid());
	if (fd == -EMFILE || fd == -ENFILE || fd == -ENOMEM)
		return fd;
	if (fd < 0)
		return 0;
	/* The three calls the library makes must all work: a filter may
	 * allow one and deny another. */
	works = pidfd_send_signal(fd, 0, NULL, 0) == 0 &&
		waitid(P_PIDFD, fd, &si, WEXITED | WNOHANG) < 0 && errno == ECHILD;
	fdreg_close(fd);
	return works;
}

/*
 * 1 if the library follows its children through pidfds, 0 if through
 * pids, or a negative errno when it cannot tell yet: a start then fails
 * with it, as it would have at its own pidfd_open.  Asked once, at the
 * first start; a shortage of fds or memory then must not settle it for
 * the process's life.  Threads that ask at once each probe, and the
 * first answer stored is everyone's.
 */
int pidfd_supported(void)
{
	int state = __atomic_load_n(&pidfd_state, __ATOMIC_ACQUIRE), r, expected = 0;

	if (state)
		return state > 0;
	r = probe();
	if (r < 0)
		return r;
	/* The first answer stored is everyone's. */
	if (!__atomic_compare_exchange_n(&pidfd_state, &expected, r ? 1 : -1, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return expected > 0;
	return r;
}

/*
 * Sends sig to the process group that the pidfd's process leads.  The
 * kernel resolves the group through the pidfd, so this reaches the group
 * even after its leader was reaped, and never a reused pid.  Returns 0,
 * -ESRCH when no such group exists (the child has not yet called setpgid,
 * or the group is empty), or -EINVAL on kernels before 6.9.
 */
int pidfd_signal_group(int pidfd, int sig)
{
	if (!__atomic_load_n(&have_group_flag, __ATOMIC_RELAXED))
		return -EINVAL;
	if (pidfd_send_signal(pidfd, sig, NULL, PIDFD_SIGNAL_PROCESS_GROUP) == 0)
		return 0;
	if (errno == EINVAL)
		__atomic_store_n(&have_group_flag, false, __ATOMIC_RELAXED);
	return -errno;
}

/*
 * The wait status of a child that something else reaped, kept by the
 * kernel for its pidfds since Linux 6.15.  Returns 0 or a negative errno
 * (-ENOTTY, -EINVAL: kernel too old; -ESRCH: not known; -EAGAIN: not yet,
 * the process is dead but still attached to its pid).
 *
 * -EAGAIN is a window, not a state: when the kernel reaps a child itself
 * (its parent ignores SIGCHLD), exit_notify() wakes the pidfd's pollers
 * before release_task() records the status, and a poller on the other
 * CPU can ask in between.  The ioctl answers for an attached process
 * without the exit bit; once released, with it (6.15) or -ESRCH (6.13,
 * 6.14, which record none).
 */
int pidfd_exit_status(int pidfd, int *ret_wstatus)
{
	struct pidfd_info_v0 info;

	memset(&info, 0, sizeof info);
	info.mask = PIDFD_INFO_EXIT_BIT;
	if (ioctl(pidfd, PIDFD_GET_INFO_V0, &info) < 0)
		return -errno;
	if (!(info.mask & PIDFD_INFO_EXIT_BIT))
		return -EAGAIN;
	*ret_wstatus = info.exit_code;
	return 0;
}
