/*
 * child.c - the task's side: what a forked child does before and after it
 * runs the task, and errgroup_errorf.
 *
 * The child was made by glibc's fork(), which resets malloc and stdio
 * locks, and the fd registry's atfork handler has already closed every
 * library fd but the two this task needs: the group channel's shared end
 * and the read end of its lifeline.  The parent blocked all
 * signals before the fork, so no host signal handler can run here before
 * the dispositions are reset.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* In a task: the group channel's shared end.  -1 elsewhere. */
static int task_channel = -1;

static int send_all(int fd, const void *buf, size_t len)
{
	ssize_t n;

	do
		n = send(fd, buf, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : 0;
}

/*
 * System calls go through syscall(), not libc's wrappers, for the reason
 * cleanstart.c gives: each wrapper is a page of libc's text that the child
 * has not mapped yet.  The gate signal's number comes from the parent,
 * since SIGRTMIN is a libc call too.
 */
_Noreturn void child_run(int channel, int lifeline, int gate_signal,
			 errgroup_task *fn, void *arg)
{
	unsigned char frame[FRAME_HEADER_SIZE];
	uint64_t gate = UINT64_C(1) << (gate_signal - 1), none = 0;
	long n;
	int r;

	clean_start(31);
	if (!lifeline_arm(lifeline))
		_exit(127);
	/* The start gate: the parent sends the gate signal once it holds our
	 * pidfd, so that even a task that ends at once cannot be reaped by
	 * someone else first.  Every signal is still blocked; should the
	 * parent die meanwhile, the lifeline ends the wait. */
	do
		n = syscall(SYS_rt_sigtimedwait, &gate, NULL, NULL, sizeof gate);
	while (n < 0 && errno == EINTR);
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof none);
	task_channel = channel;

	r = fn(arg);

	fflush(NULL);
	if (r == 0)
		_exit(0);
	/* The exit status keeps 8 bits; the frame carries the whole value. */
	frame_encode_header(frame, FRAME_RETURNED, r, 0);
	send_all(channel, frame, sizeof frame);
	_exit((r & 0xff) ? (r & 0xff) : 1);
}

EXPORT int errgroup_errorf(int code, const char *fmt, ...)
{
	unsigned char *frame;
	char *text;
	size_t len;
	va_list ap;
	int n;

	if (task_channel < 0 || !fmt)
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
	send_all(task_channel, frame, FRAME_HEADER_SIZE + len);
	free(frame);
	return code;
}
