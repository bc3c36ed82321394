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
 * task runs it writes only its stack, and it runs no libc code
 * (rawsyscall.c).
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
#include <time.h>
#include <unistd.h>

#include "internal.h"

/*
 * A task's record: the two library fds it keeps, for errgroup_errorf (from
 * any of its threads) and for the children it forks, which close them.
 *
 * Where it lives.  Each page a forked child writes costs it a fault
 * (parentmem.c), and a record the child wrote to a global was the one
 * fault a task took beyond a bare fork's child (docs/benchmarks.md).  So
 * the record is the struct that spawn_call (start.c) fills on its stack,
 * which the parent writes anyway: the fork copies it, and in the task the
 * frame stays as it was, since child_run never returns.  The fork's
 * prepare handler points `forked` at it, and sets `forked_owner` to the
 * forking process, under the registry's lock so that two threads' forks
 * cannot cross (fdreg.c), and only when they change: a host that calls
 * go() from one place writes them once.
 *
 * Only on the process's first stack, which stays mapped for its whole
 * life (record_in_place): a thread's stack is unmapped when the thread
 * ends, and the pointer is read in the processes that inherit it.  A task
 * forked from another thread writes its record to `saved` itself.
 *
 * In the owner the frame is soon reused, so the owner never reads the
 * record, nor does a child the owner forks itself, which forgets it.  A
 * record is a process's own only if the process is a child of the
 * record's owner and still holds the channel or the lifeline
 * (is_this_task).  A task that starts tasks of its own moves `forked`, so
 * it copies its record to `saved` first.
 */
static const struct task_fds *forked;
static pid_t forked_owner;
static struct task_fds saved;   /* owner 0: none */

/* The top of the process's first stack (glibc's, since 2.1). */
extern void *__libc_stack_end;

/* The first stack can grow to RLIMIT_STACK, and the kernel keeps other
 * mappings at least 128 MiB below its top: an address less than 8 MiB
 * under the top is on it.  A go() deeper than that takes the other path. */
#define FIRST_STACK_SPAN ((uintptr_t)8 << 20)

bool record_in_place(const struct task_fds *kept)
{
	uintptr_t top = (uintptr_t)__libc_stack_end, at = (uintptr_t)kept;

	return at < top && top - at < FIRST_STACK_SPAN;
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
static bool is_channel(const struct task_fds *r)
{
	struct stat st;

	return r->channel >= 0 && fstat(r->channel, &st) == 0 && S_ISSOCK(st.st_mode) &&
	       st.st_dev == r->channel_dev && st.st_ino == r->channel_ino;
}

CHILD_CODE
static bool is_lifeline(int fd)
{
	return fd >= 0 && raw_syscall(SYS_fcntl, fd, F_GETSIG, 0, 0, 0, 0) == SIGKILL;
}

static bool is_this_task(const struct task_fds *r)
{
	return r->owner > 0 && r->owner == getppid() &&
	       (is_channel(r) || is_lifeline(r->lifeline));
}

/*
 * This process's record if it is a task, else NULL.  The owner of
 * `forked` does not look at what it points to.  saved is read only once
 * forked or its owner has moved, which is after it was written.
 */
static const struct task_fds *record(void)
{
	const struct task_fds *r = __atomic_load_n(&forked, __ATOMIC_ACQUIRE);

	if (r && __atomic_load_n(&forked_owner, __ATOMIC_ACQUIRE) != getpid() && is_this_task(r))
		return r;
	return is_this_task(&saved) ? &saved : NULL;
}

struct task_fds task_kept_fds(void)
{
	const struct task_fds *r = record();

	return r ? *r : (struct task_fds){ -1, -1, 0, 0, 0 };
}

/* The channel, unless the task closed it; else -1.  Sent into, a number
 * the task reused would get our frames. */
static int channel_fd(void)
{
	const struct task_fds *r = record();

	return r && is_channel(r) ? r->channel : -1;
}

/* kept: NULL when the record is not in place (the child saves it); self:
 * this process, which forks. */
void task_fds_forking(const struct task_fds *kept, pid_t self)
{
	const struct task_fds *r = __atomic_load_n(&forked, __ATOMIC_RELAXED);
	pid_t owner = __atomic_load_n(&forked_owner, __ATOMIC_RELAXED);

	if (r == kept && (!r || owner == self))
		return;
	if (r && owner != self && saved.owner == 0 && is_this_task(r))
		saved = *r;
	if (owner != self)
		__atomic_store_n(&forked_owner, self, __ATOMIC_RELEASE);
	__atomic_store_n(&forked, kept, __ATOMIC_RELEASE);
}

/* In a child, the fds of r closed if they are still the task's. */
CHILD_CODE
static void close_kept(const struct task_fds *r)
{
	if (is_channel(r))
		raw_syscall(SYS_close, r->channel, 0, 0, 0, 0, 0);
	if (is_lifeline(r->lifeline))
		raw_syscall(SYS_close, r->lifeline, 0, 0, 0, 0, 0);
}

/*
 * In the child of any fork (fdreg.c): a task's child is no task.  It must
 * not hold the task's fds (a sibling's frames, a lifeline kept open), but
 * only those: numbers the task reused are the task's own files.  A record
 * whose owner is not our parent is an ancestor's; once its fds are
 * closed, their numbers name whatever the child opens next, so it is
 * forgotten as well.  A record our parent owns is the new task's, in the
 * library's own fork, which writes nothing here (each write would be a
 * page fault per task); in any other fork (plain) it is stale, and
 * forgotten unread.
 */
CHILD_CODE
void task_fds_leave(bool plain)
{
	const struct task_fds *r = __atomic_load_n(&forked, __ATOMIC_RELAXED);
	long parent;

	if (!r && saved.owner == 0)
		return;
	parent = raw_syscall(SYS_getppid, 0, 0, 0, 0, 0, 0);
	if (saved.owner != 0 && saved.owner != parent) {
		close_kept(&saved);
		saved = (struct task_fds){ 0 };
	}
	if (!r || (forked_owner == parent && !plain))
		return;
	if (forked_owner != parent)
		close_kept(r);
	__atomic_store_n(&forked, NULL, __ATOMIC_RELAXED);
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
	struct timespec now = { 0, 0 };
	siginfo_t info;
	long n;

	do
		n = raw_syscall(SYS_rt_sigtimedwait, (long)&gate, (long)&info, 0, sizeof gate, 0, 0);
	while (n == -EINTR || (n == gate_signal && !opens_gate(&info, parent)));
	do
		n = raw_syscall(SYS_rt_sigtimedwait, (long)&gate, 0, (long)&now, sizeof gate, 0, 0);
	while (n == gate_signal || n == -EINTR);
}

/*
 * The gate signal's number and the parent's pid (the record's owner) come
 * from the parent, since SIGRTMIN is a libc call and getppid a system
 * call.  kept is the task's record (see forked above), read only when in
 * place.
 */
CHILD_CODE
_Noreturn void child_run(const struct fdreg_snapshot *inherited, const struct task_fds *kept,
			 bool in_place, int gate_signal, int cancel_state, errgroup_task *fn,
			 void *arg)
{
	unsigned char frame[FRAME_HEADER_SIZE];
	uint64_t none = 0;
	int r, channel;

	fdreg_close_snapshot(inherited, kept->channel, kept->lifeline);
	if (!in_place)
		saved = *kept;
	clean_start(31);
	if (!lifeline_arm(kept->lifeline))
		leave(127);
	wait_at_gate(gate_signal, kept->owner);
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
	va_start(ap, fmt);
	n = vsnprintf(text, ERRGROUP_MESSAGE_MAX + 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	len = strnlen(text, ERRGROUP_MESSAGE_MAX);
	if (n > ERRGROUP_MESSAGE_MAX && len == ERRGROUP_MESSAGE_MAX)
		len += (size_t)snprintf(text + len, FRAME_TRUNCATION_MARKER_MAX,
					"[... message truncated: %d bytes]", n);
	frame_encode_header(frame, FRAME_MESSAGE, code, len);
	send_all(channel, frame, FRAME_HEADER_SIZE + len);
	free(frame);
	return code;
}
