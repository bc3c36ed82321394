/*
 * output.c - each job's stdout and stderr, carried to ours.
 *
 * A job writes into two pipes whose read ends are ours, non-blocking and
 * polled by run.c, so a job that prints megabytes never blocks on a full
 * pipe while errgroup waits elsewhere.  --group keeps what a job wrote until
 * it ends and then writes it in one piece, stdout then stderr, so that jobs
 * never interleave; --line-buffer writes each whole line as it comes and
 * keeps the unfinished rest; --ungroup never gets here (the job has our fds).
 * With --tag every line starts with the job's name and a tab.
 *
 * What a job wrote before it ended is in the pipe when run.c learns of its
 * end, so capture_drain() after the reap loses nothing, also of a job that
 * was killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* Read at least this much at a time: the default pipe size. */
#define READ_CHUNK 65536

/* The first error writing our own stdout or stderr (-errno), or 0. */
static int write_error;

/* Our stdout and stderr, once a write to them failed: the rest of the
 * output has nowhere to go, and run.c stops the jobs. */
static bool broken[3];

int output_error(void)
{
	return write_error;
}

/* What may need acting on at once while our output waits for its reader
 * (run.c's signalfd and the group's fd), and who acts on it. */
static int watched[2] = { -1, -1 };
static void (*watch_fn)(void *);
static void *watch_arg;

/* Whether a write to a terminal lets SIGTTOU through (terminal_write):
 * while run.c takes it, blocked, through its signalfd. */
static bool terminal_stops;

/* Set by the handler SIGTTOU has during terminal_write's write. */
static volatile sig_atomic_t stop_asked;

void output_while_waiting(int fd0, int fd1, void (*fn)(void *), void *arg)
{
	struct sigaction ttou;

	watched[0] = fd0;
	watched[1] = fd1;
	watch_fn = fn;
	watch_arg = arg;
	/* run.c takes SIGTTOU unless errgroup was started with it ignored;
	 * then no terminal ever stops errgroup for a write. */
	terminal_stops = fn && sigaction(SIGTTOU, NULL, &ttou) == 0 &&
			 ttou.sa_handler != SIG_IGN;
}

static void note_stop(int sig)
{
	(void)sig;
	stop_asked = 1;
}

/*
 * One write(2) to fd, a terminal.  Under `stty tostop` a terminal stops a
 * process of its background that writes to it (SIGTTOU), which stopped
 * errgroup alone: its jobs, in process groups of their own, ran on
 * unsupervised.  Blocked, as run.c has it, SIGTTOU would not stop errgroup
 * at all: the terminal lets the write through.  So it is let through for
 * the write alone, to a handler without SA_RESTART: the write fails with
 * EINTR instead of stopping errgroup, and the signal is sent again,
 * blocked, for run.c to act on as on Ctrl-Z: the jobs stop, then errgroup.
 * Continued, errgroup writes again: in the foreground (fg) the text goes
 * through, still in the background (bg) it stops errgroup again, as it
 * would any program.  A terminal that refuses the write without a stop
 * (EIO: no shell controls errgroup's process group, and a stop would be
 * dropped) takes it with SIGTTOU blocked: the text is not lost.
 */
ssize_t terminal_write(int fd, const char *buf, size_t len)
{
	struct sigaction note = { .sa_handler = note_stop }, old;
	sigset_t ttou;
	ssize_t n;
	int error;

	if (!terminal_stops)
		return write(fd, buf, len);
	sigemptyset(&ttou);
	sigaddset(&ttou, SIGTTOU);
	for (;;) {
		stop_asked = 0;
		sigaction(SIGTTOU, &note, &old);
		pthread_sigmask(SIG_UNBLOCK, &ttou, NULL);
		n = write(fd, buf, len);
		error = errno;
		pthread_sigmask(SIG_BLOCK, &ttou, NULL);
		sigaction(SIGTTOU, &old, NULL);
		if (!stop_asked)
			break;
		kill(getpid(), SIGTTOU);
		watch_fn(watch_arg);
		/* What was written before the signal came is written. */
		if (n >= 0)
			return n;
	}
	if (n < 0 && error == EIO)
		return write(fd, buf, len);
	errno = error;
	return n;
}

/*
 * Waits until fd takes PIPE_BUF bytes without blocking.  A reader that
 * stops reading (a paused pager) must not keep the jobs running: a signal
 * or a job's end that comes meanwhile is acted on at once (watch_fn takes
 * what made its fd readable), then the wait goes on, as the text is not
 * dropped.  Also for an O_NONBLOCK fd someone shares.
 */
static void wait_writable(int fd)
{
	struct pollfd p[3] = {
		{ .fd = fd, .events = POLLOUT },
		{ .fd = watched[0], .events = POLLIN },
		{ .fd = watched[1], .events = POLLIN },
	};
	int n;

	for (;;) {
		n = poll(p, 3, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || p[0].revents)
			return;
		if (p[1].revents || p[2].revents)
			watch_fn(watch_arg);
	}
}

/* Whether a write to fd can wait for a reader: not to a file. */
static bool may_block(int fd)
{
	struct stat st;

	return fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
}

/* Writes all of buf to fd, waiting for its reader as long as it takes.
 * Returns 0 or -errno. */
int output_write(int fd, const char *buf, size_t len)
{
	bool waits = may_block(fd), terminal = isatty(fd);
	size_t chunk;
	ssize_t n;

	while (len > 0) {
		/* At most PIPE_BUF once writable: a pipe's writer then never
		 * blocks, where it would not see a stop request. */
		chunk = len;
		if (waits) {
			wait_writable(fd);
			if (chunk > PIPE_BUF)
				chunk = PIPE_BUF;
		}
		n = terminal ? terminal_write(fd, buf, chunk) : write(fd, buf, chunk);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			waits = true;
			continue;
		}
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The jobs' output: once it cannot be written, the rest is dropped, and
 * run.c stops the jobs. */
static void write_all(int fd, const char *buf, size_t len)
{
	int res;

	if (fd < 3 && broken[fd])
		return;
	res = output_write(fd, buf, len);
	if (res < 0) {
		if (!write_error)
			write_error = res;
		if (fd < 3)
			broken[fd] = true;
	}
}

/* Tagged lines are gathered here, so that a job's short lines cost one
 * write per buffer, not three per line. */
struct sink {
	int fd;
	size_t len;
	char buf[65536];
};

static void sink_flush(struct sink *s)
{
	write_all(s->fd, s->buf, s->len);
	s->len = 0;
}

static void sink_put(struct sink *s, const char *text, size_t len)
{
	if (s->len + len > sizeof s->buf)
		sink_flush(s);
	if (len > sizeof s->buf) {
		write_all(s->fd, text, len);
		return;
	}
	memcpy(s->buf + s->len, text, len);
	s->len += len;
}

static void emit_tagged(int fd, const char *name, const char *text, size_t len)
{
	static struct sink sink;
	size_t name_len = strlen(name), line_len;
	const char *end;

	sink.fd = fd;
	while (len > 0) {
		end = memchr(text, '\n', len);
		line_len = end ? (size_t)(end - text) + 1 : len;
		sink_put(&sink, name, name_len);
		sink_put(&sink, "\t", 1);
		sink_put(&sink, text, line_len);
		text += line_len;
		len -= line_len;
	}
	sink_flush(&sink);
}

static void emit(const struct capture *c, const struct job *job,
		 const struct options *opts, size_t len)
{
	if (len == 0)
		return;
	progress_clear();
	if (opts->tag)
		emit_tagged(c->to_fd, job->name, c->data, len);
	else
		write_all(c->to_fd, c->data, len);
	progress_wrote(c->to_fd, c->data, len);
}

/* Writes out what is held and forgets it. */
static void emit_held(struct capture *c, const struct job *job,
		      const struct options *opts)
{
	emit(c, job, opts, c->len);
	c->len = 0;
}

/* --line-buffer: writes the whole lines held, keeps the unfinished one. */
static void emit_lines(struct capture *c, const struct job *job,
		       const struct options *opts)
{
	const char *last = memrchr(c->data, '\n', c->len);
	size_t whole;

	if (!last)
		return;
	whole = (size_t)(last - c->data) + 1;
	emit(c, job, opts, whole);
	memmove(c->data, c->data + whole, c->len - whole);
	c->len -= whole;
}

static int reserve(struct capture *c)
{
	size_t want;
	char *grown;

	if (c->size - c->len >= READ_CHUNK)
		return 0;
	want = c->size ? c->size : READ_CHUNK;
	while (want - c->len < READ_CHUNK)
		want *= 2;
	grown = realloc(c->data, want);
	if (!grown)
		return -ENOMEM;
	c->data = grown;
	c->size = want;
	return 0;
}

int capture_open(struct capture *c, int to_fd, int *ret_write_end)
{
	int fds[2], flags;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	/* Only our end is non-blocking: the job gets an ordinary pipe. */
	flags = fcntl(fds[0], F_GETFL);
	if (flags < 0 || fcntl(fds[0], F_SETFL, flags | O_NONBLOCK) < 0) {
		int r = -errno;

		close(fds[0]);
		close(fds[1]);
		return r;
	}
	c->fd = fds[0];
	c->to_fd = to_fd;
	*ret_write_end = fds[1];
	return 0;
}

static void capture_close(struct capture *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* One read.  Returns the bytes read, 0 when there is nothing now or the
 * pipe is closed (at its end, or on an error), -1 when there is no room:
 * then what is held was written out early, grouping lost but no byte. */
int capture_read(struct capture *c, const struct job *job, const struct options *opts)
{
	ssize_t n;

	if (reserve(c) < 0) {
		emit_held(c, job, opts);
		if (reserve(c) < 0)
			return -1;
	}
	n = read(c->fd, c->data + c->len, c->size - c->len);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0) {
		capture_close(c);
		return 0;
	}
	c->len += (size_t)n;
	c->received += (unsigned long long)n;
	if (opts->output == OUTPUT_LINE_BUFFER)
		emit_lines(c, job, opts);
	return (int)n;
}

/* After the job ended: takes what it left in the pipe, then closes it.
 * A process the job left behind may still hold the pipe and write on, so
 * this reads no more than the pipe can hold, which is everything the job
 * wrote before it ended. */
void capture_drain(struct capture *c, const struct job *job, const struct options *opts)
{
	int capacity;
	long left;
	int n;

	if (c->fd < 0)
		return;
	capacity = fcntl(c->fd, F_GETPIPE_SZ);
	left = capacity > 0 ? capacity : READ_CHUNK;
	while (left > 0 && c->fd >= 0 && (n = capture_read(c, job, opts)) > 0)
		left -= n;
	capture_close(c);
}

/* Writes out the rest of what the job wrote and frees the buffers, which
 * a job that printed megabytes made large. */
void output_job_ended(struct job *job, const struct options *opts)
{
	emit_held(&job->out, job, opts);
	emit_held(&job->err, job, opts);
	capture_release(&job->out);
	capture_release(&job->err);
}

void capture_release(struct capture *c)
{
	capture_close(c);
	free(c->data);
	c->data = NULL;
	c->len = 0;
	c->size = 0;
}
