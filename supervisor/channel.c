/*
 * channel.c - the group's channel: one SOCK_SEQPACKET socketpair that all
 * of the group's tasks send their frames on, and the parent's reading of
 * it, bounded and never blocking.
 *
 * One channel per group rather than per task costs a task no system call.
 * Frames are attributed by the sender's pid, which the kernel attaches
 * (SO_PASSCRED) and a task cannot forge without CAP_SYS_ADMIN; a frame
 * whose pid is not a running task of the group (a grandchild's, say) is
 * dropped.  A frame sent before the child exited is queued before its exit
 * is visible, so reap.c drains the channel before it takes a task's
 * status.  That drain is bounded by the channel's capacity: everything
 * queued when it starts fits in SO_SNDBUF bytes, so a task that floods the
 * channel cannot hold the reaper in an endless loop, and the parent keeps
 * only each task's last message, so it cannot exhaust the parent's memory.
 *
 * Nor can a task pass fds to the parent: since Linux 6.16 the receiving
 * end refuses them (SO_PASSRIGHTS), and the task's sendmsg fails.  An fd
 * that arrived would be the host's, outside the fd registry, until closed,
 * and a task forked by another thread meanwhile would inherit it.  Older
 * kernels deliver them; read_one closes them at once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define CHANNEL_SNDBUF (1 << 20)
#define MAX_PASSED_FDS 16
#define MIN_DATAGRAM_TRUESIZE 256   /* what the kernel charges at least */
#define SMALL_FRAME 256             /* read on the stack: a code, a short message */

int channel_open(errgroup *g)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = event_key(0, EVENT_MESSAGE) };
	int sv[2], one = 1, size = CHANNEL_SNDBUF, r;
	socklen_t len = sizeof size;
	struct stat st;

	r = fdreg_socketpair(sv);
	if (r < 0)
		return r;
	g->channel_rx = sv[0];
	g->channel_tx = sv[1];
	if (fstat(sv[1], &st) < 0)
		return -errno;
	g->channel_dev = st.st_dev;
	g->channel_ino = st.st_ino;
	if (setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0)
		return -errno;
#ifdef SO_PASSRIGHTS
	setsockopt(sv[0], SOL_SOCKET, SO_PASSRIGHTS, &(int){ 0 }, sizeof(int));   /* before 6.16: ENOPROTOOPT */
#endif
	/* Best effort: an unprivileged process gets at most wmem_max. */
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
	if (getsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &size, &len) < 0)
		return -errno;
	g->channel_capacity = (size_t)size;
	if (epoll_ctl(g->epoll_fd, EPOLL_CTL_ADD, sv[0], &ev) < 0)
		return -errno;
	return 0;
}

static void set_message(struct task *t, char *message)
{
	if (!message)
		return;   /* out of memory: keep the older message */
	free(t->message);
	t->message = message;
}

static void malformed(struct task *t, size_t len)
{
	char *text;

	if (asprintf(&text, "the task sent a malformed message (%zu bytes)", len) < 0)
		text = NULL;
	set_message(t, text);
}

static void take_frame(struct task *t, const unsigned char *buf, size_t len)
{
	struct frame f;

	if (frame_decode(buf, len, &f) < 0) {
		malformed(t, len);
		return;
	}
	if (f.type == FRAME_RETURNED) {
		t->returned = true;
		t->returned_code = f.code;
		return;
	}
	set_message(t, strndup(f.text, f.text_len));
}

/* Reads the sender's pid, and closes any fd a task tried to pass us. */
static pid_t sender(struct msghdr *msg)
{
	pid_t pid = 0;

	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_level != SOL_SOCKET)
			continue;
		if (c->cmsg_type == SCM_CREDENTIALS) {
			struct ucred cred;

			memcpy(&cred, CMSG_DATA(c), sizeof cred);
			pid = cred.pid;
		} else if (c->cmsg_type == SCM_RIGHTS) {
			size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			for (size_t i = 0; i < n; i++) {
				int fd;

				memcpy(&fd, CMSG_DATA(c) + i * sizeof fd, sizeof fd);
				close(fd);
			}
		}
	}
	return pid;
}

/*
 * Reads one datagram; returns false when the channel is empty.  A frame
 * that does not fit on the stack (a message) gets the heap; when there is
 * no memory for it, it is taken all the same, cut, and dropped, as
 * set_message keeps the older message then.  Left queued, it would make
 * the channel readable for ever (the poller spinning) and hold back the
 * frame with the task's code behind it.
 */
static bool read_one(errgroup *g, size_t *bytes)
{
	union {
		char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(MAX_PASSED_FDS * sizeof(int))];
		struct cmsghdr align;
	} control;
	unsigned char small[SMALL_FRAME], *buf = small;
	struct msghdr msg = { 0 };
	struct iovec iov;
	struct task *t;
	ssize_t size, n;
	size_t want;

	do
		size = recv(g->channel_rx, NULL, 0, MSG_DONTWAIT | MSG_PEEK | MSG_TRUNC);
	while (size < 0 && errno == EINTR);
	if (size < 0)
		return false;
	/* An oversized datagram is taken truncated and reported. */
	want = size > FRAME_MAX ? FRAME_MAX : (size_t)size;
	if (want > sizeof small) {
		buf = malloc(want);
		if (!buf) {
			buf = small;
			want = sizeof small;
		}
	}
	iov.iov_base = buf;
	iov.iov_len = want;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control.buf;
	msg.msg_controllen = sizeof control.buf;
	do
		n = recvmsg(g->channel_rx, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (buf != small)
			free(buf);
		return false;
	}
	if (n == 0 && msg.msg_controllen == 0) {
		/* End of file, not a datagram (every datagram carries the
		 * sender's credentials): a task called shutdown(), which acts
		 * on the socket that all tasks share.  Nothing can arrive any
		 * more, and the end of file stays readable: stop watching, or
		 * the poller would spin. */
		epoll_ctl(g->epoll_fd, EPOLL_CTL_DEL, g->channel_rx, NULL);
		if (buf != small)
			free(buf);
		return false;
	}
	*bytes += (size_t)size + MIN_DATAGRAM_TRUESIZE;
	t = task_find_pid(g, sender(&msg));
	if (t) {
		if (size > FRAME_MAX)
			malformed(t, (size_t)size);
		else if (!(msg.msg_flags & MSG_TRUNC))
			take_frame(t, buf, (size_t)n);
	}
	if (buf != small)
		free(buf);
	return true;
}

/* Reads what the channel holds now, up to its capacity.  Lock held. */
void channel_drain(errgroup *g)
{
	size_t bytes = 0;

	while (bytes <= g->channel_capacity && read_one(g, &bytes))
		;
}
