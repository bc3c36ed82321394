/*
 * child.c - the task's side: what a forked child does before and after it
 * runs the task, and errgroup_errorf.
 *
 * The child was made by glibc's fork(), which resets malloc's and stdio's
 * locks.  It closes every library fd but the two this task needs, the
 * group channel's shared end and the read end of its lifeline, from the
 * copy of the fd registry that the fork took for it (fdreg.c).  The
 * parent blocked all signals before the fork, so no host signal handler
 * can run here before the dispositions are reset.
 *
 * Every page a child writes costs it a fault (parentmem.c), so until the
 * task runs it writes only its stack and the page of task_fds below, and
 * it runs no libc code (rawsyscall.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* In a task: the two library fds it keeps, for errgroup_errorf (from any
 * of the task's threads) and for the children the task forks, which close
 * them.  -1 elsewhere.  Written in the child before the task runs, and
 * cleared in every child the task forks. */
static struct task_fds task_fds = { -1, -1, 0, 0 };

struct task_fds task_kept_fds(void)
{
	return task_fds;
}

/*
 * Whether a kept fd is still the task's: a task may close its fds
 * (closefrom before it runs a program, say), and its own files then take
 * the numbers.  The channel is known by its socket; the lifeline's read
 * end is the only file whose owner signal is SIGKILL (lifeline.c), also
 * as a dup.  libc's fstat: the raw call's struct stat is not libc's on
 * 32-bit architectures.  It runs only in a task and in its children, off
 * the path of a task's start.
 */
CHILD_CODE
static bool is_channel(int fd)
{
	struct stat st;

	return fd >= 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
	       st.st_dev == task_fds.channel_dev && st.st_ino == task_fds.channel_ino;
}

CHILD_CODE
static bool is_lifeline(int fd)
{
	return fd >= 0 && raw_syscall(SYS_fcntl, fd, F_GETSIG, 0, 0, 0, 0) == SIGKILL;
}

/* The channel, unless the task closed it; else -1.  Sent into, a number
 * the task reused would get our frames. */
static int channel_fd(void)
{
	return is_channel(task_fds.channel) ? task_fds.channel : -1;
}

/*
 * In the child of any fork (fdreg.c): a task's child is no task.  It must
 * not hold the task's fds (a sibling's frames, a lifeline kept open), but
 * only those: numbers the task reused are the task's own files.  Once
 * they are closed, their numbers name whatever the child opens next, so
 * they are forgotten as well; the library's own fork sets them again in
 * child_run.  Tested first: a host that is no task writes nothing here,
 * since each write would be a page fault per task (parentmem.c).
 */
CHILD_CODE
void task_fds_leave(void)
{
	if (task_fds.channel < 0 && task_fds.lifeline < 0)
		return;
	if (is_channel(task_fds.channel))
		raw_syscall(SYS_close, task_fds.channel, 0, 0, 0, 0, 0);
	if (is_lifeline(task_fds.lifeline))
		raw_syscall(SYS_close, task_fds.lifeline, 0, 0, 0, 0, 0);
	task_fds = (struct task_fds){ -1, -1, 0, 0 };
}

static int send_all(int fd, const void *buf, size_t len)
{
	ssize_t n;

	do
		n = send(fd, buf, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : 0;
}

CHILD_CODE
static _Noreturn void leave(int status)
{
	raw_syscall(SYS_exit_group, status, 0, 0, 0, 0, 0);
	__builtin_unreachable();
}

/*
 * The start gate: the parent sends the gate signal once it holds our
 * pidfd, so that even a task that ends at once cannot be reaped by
 * someone else first.  Every signal is still blocked; should the parent
 * die meanwhile, the lifeline ends the wait.  Until setpgid we were in
 * the host's process group, and a SIGRTMIN sent to that group would
 * otherwise open the gate, and the parent's, still queued, would then
 * kill the task.  So only one the parent sent counts (the kernel stamps
 * the sender's pid), and every other, also one queued behind the
 * parent's, is dropped.  The parent's own SIGRTMIN to its group cannot be
 * told from the gate: at worst it opens the gate early, and the real one
 * is dropped.
 *
 * Nor can a signal that lost its stamp.  A plain signal is never refused,
 * but once the user's pending signals reach our RLIMIT_SIGPENDING (any
 * process of the same user, a sibling task included, can queue that
 * many), the kernel delivers a real-time one without its siginfo: we read
 * si_code SI_USER and si_pid 0.  The parent's gate arrives so too, and
 * dropping it would leave us waiting forever; so such a signal opens the
 * gate, at worst early, as the parent's own SIGRTMIN to its group does.
 */
CHILD_CODE
static bool opens_gate(const siginfo_t *info, pid_t parent)
{
	return info->si_pid == parent || (info->si_pid == 0 && info->si_code == SI_USER);
}

CHILD_CODE
static void wait_at_gate(int gate_signal, pid_t parent)
{
	uint64_t gate = UINT64_C(1) << (gate_signal - 1);
	siginfo_t info;
	long n;

	do
		n = raw_syscall(SYS_rt_sigtimedwait, (long)&gate, (long)&info, 0, sizeof gate, 0, 0);
	while (n == -EINTR || (n == gate_signal && !opens_gate(&info, parent)));
	drop_pending_signals(gate);
}

/*
 * The gate signal's number and the parent's pid come from the parent,
 * since SIGRTMIN is a libc call and getppid a system call.
 */
CHILD_CODE
_Noreturn void child_run(const struct fdreg_snapshot *inherited, const struct task_fds *kept,
			 int gate_signal, pid_t parent, int cancel_state, errgroup_task *fn,
			 void *arg)
{
	unsigned char frame[FRAME_HEADER_SIZE];
	uint64_t none = 0;
	int r, channel;

	fdreg_close_snapshot(inherited, kept->channel, kept->lifeline);
	task_fds = *kept;
	clean_start(31);
	if (!lifeline_arm(kept->lifeline))
		leave(127);
	wait_at_gate(gate_signal, parent);
	raw_syscall(SYS_rt_sigprocmask, SIG_SETMASK, (long)&none, 0, sizeof none, 0, 0);
	/* The fork copied the state go() set (internal.h): the task runs with
	 * the caller's. */
	if (cancel_state == PTHREAD_CANCEL_ENABLE)
		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);

	r = fn(arg);

	flush_pending_output();
	if (r == 0)
		leave(0);
	/* The exit status keeps 8 bits; the frame carries the whole value. */
	frame_encode_header(frame, FRAME_RETURNED, r, 0);
	channel = channel_fd();
	if (channel >= 0)
		send_all(channel, frame, sizeof frame);
	leave((r & 0xff) ? (r & 0xff) : 1);
}

EXPORT int errgroup_errorf(int code, const char *fmt, ...)
{
	unsigned char *frame;
	char *text;
	size_t len;
	va_list ap;
	int n, channel = channel_fd();

	if (channel < 0 || !fmt)
		return code;
	frame = malloc(FRAME_MAX);
	if (!frame)
		return code;
	text = (char *)frame + FRAME_HEADER_SIZE;
	text[0] = '\0';   /* if vsnprintf fails before it writes */
	va_start(ap, fmt);
	n = vsnprintf(text, ERRGROUP_MESSAGE_MAX + 1, fmt, ap);
	va_end(ap);
	len = frame_message_length(text, n, errno);
	frame_encode_header(frame, FRAME_MESSAGE, code, len);
	send_all(channel, frame, FRAME_HEADER_SIZE + len);
	free(frame);
	return code;
}
