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
#include <string.h>
#include <sys/socket.h>
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

/* Dispositions the host set (ignored SIGTERM, a SIGINT handler...) would
 * make cancellation fail or run host code in the task; 1..31 covers the
 * classic signals, and glibc keeps 32 and 33 for itself. */
static void reset_signal_dispositions(void)
{
	struct sigaction dfl;

	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	for (int sig = 1; sig < 32; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		sigaction(sig, &dfl, NULL);
	}
}

_Noreturn void child_run(int channel, int lifeline, errgroup_task *fn, void *arg)
{
	unsigned char frame[FRAME_HEADER_SIZE];
	sigset_t none, gate;
	int r, n;

	/* The group signals the task's process group; until this call it
	 * signals the child alone, which has no descendants yet. */
	setpgid(0, 0);
	reset_signal_dispositions();

	if (!lifeline_arm(lifeline))
		_exit(127);
	/* The start gate: the parent sends SIGNAL_GATE once it holds our
	 * pidfd, so that even a task that ends at once cannot be reaped by
	 * someone else first.  Every signal is still blocked; should the
	 * parent die meanwhile, the lifeline ends the wait. */
	sigemptyset(&gate);
	sigaddset(&gate, SIGNAL_GATE);
	do
		n = sigwaitinfo(&gate, NULL);
	while (n < 0 && errno == EINTR);

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
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
