/*
 * ended.c - errgroup_fd and errgroup_reap: every task's end, successful or
 * not, queued for a caller that runs its own event loop.
 *
 * The queue exists only once the caller asked for the fd: a group nobody
 * reads from keeps only its errors, as before.  The fd is an eventfd kept
 * readable exactly while the queue is not empty: written when the first
 * entry arrives, read back to zero when the last one is taken, both under
 * the group lock.  The supervisor thread reaps, so that ends are noticed
 * while the caller sleeps in its own poll().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

/* Lock held; g->ended_fd >= 0. */
void ended_push(errgroup *g, struct task_end *e)
{
	uint64_t one = 1;
	ssize_t n;

	if (TAILQ_EMPTY(&g->ended)) {
		do
			n = write(g->ended_fd, &one, sizeof one);
		while (n < 0 && errno == EINTR);
	}
	TAILQ_INSERT_TAIL(&g->ended, e, queued);
}

/* The queue's entries that only it owns; errgroup_free. */
void ended_free(errgroup *g)
{
	struct task_end *e;

	while ((e = TAILQ_FIRST(&g->ended))) {
		TAILQ_REMOVE(&g->ended, e, queued);
		if (!e->failed)
			free(e);
	}
}

EXPORT int errgroup_fd(errgroup *g)
{
	int fd, r, cancellation;

	if (group_is_foreign(g))
		return -ECHILD;
	cancellation = cancellation_off();
	pthread_mutex_lock(&g->lock);
	if (g->ended_fd >= 0) {
		fd = g->ended_fd;
		goto out;
	}
	fd = fdreg_eventfd();
	if (fd < 0)
		goto out;
	r = supervisor_ensure(g);
	if (r < 0) {
		fdreg_close(fd);
		fd = r;
		goto out;
	}
	g->ended_fd = fd;
out:
	pthread_mutex_unlock(&g->lock);
	cancellation_restore(cancellation);
	return fd;
}

EXPORT int errgroup_reap(errgroup *g, struct errgroup_exit *ret)
{
	struct task_end *e;
	uint64_t count;
	ssize_t n;
	int r = 0, cancellation;

	if (group_is_foreign(g))
		return -ECHILD;
	cancellation = cancellation_off();
	pthread_mutex_lock(&g->lock);
	if (g->ended_fd < 0) {
		r = -EINVAL;
		goto out;
	}
	e = TAILQ_FIRST(&g->ended);
	if (!e)
		goto out;
	TAILQ_REMOVE(&g->ended, e, queued);
	*ret = e->exit;
	if (!e->failed)
		free(e);
	r = 1;
	/* Empty now: the fd must stop being readable. */
	if (TAILQ_EMPTY(&g->ended)) {
		do
			n = read(g->ended_fd, &count, sizeof count);
		while (n < 0 && errno == EINTR);
	}
out:
	pthread_mutex_unlock(&g->lock);
	cancellation_restore(cancellation);
	return r;
}
