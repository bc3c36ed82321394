/*
 * supervisor.c - the thread that handles a group's events while no caller
 * waits.
 *
 * A group gets one only when something must happen on time without a
 * caller: the first failure under cancel-on-error must stop the others
 * while the caller is busy elsewhere, and a canceled group's SIGKILL must
 * follow the grace period.  Once started it holds the poller role
 * (poll.c) until errgroup_free.  It runs with every signal blocked, so the
 * host's handlers keep running on the host's own threads.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>

#include "internal.h"

static bool stop_requested(errgroup *g, void *unused)
{
	(void)unused;
	return g->stopping;
}

static void *supervise(void *arg)
{
	errgroup *g = arg;

	pthread_mutex_lock(&g->lock);
	poll_until(g, stop_requested, NULL, true);
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

/* Starts the supervisor if the group has none.  Lock held.  -EAGAIN when
 * pthread_create fails, whatever its reason: EINVAL in a process that
 * entered a new pid namespace (unshare), EPERM under some seccomp filters
 * say "no thread" as its EAGAIN does, and the header promises -EAGAIN. */
int supervisor_ensure(errgroup *g)
{
	sigset_t all, saved;
	int r;

	if (g->has_supervisor)
		return 0;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &saved);
	r = pthread_create(&g->supervisor, NULL, supervise, g);
	pthread_sigmask(SIG_SETMASK, &saved, NULL);
	if (r != 0)
		return -EAGAIN;
	g->has_supervisor = true;
	/* A caller polling now hands the role over when it wakes. */
	if (g->polling)
		wake_poller(g);
	return 0;
}

/* Stops and joins the supervisor, if any.  Lock not held. */
void supervisor_stop(errgroup *g)
{
	pthread_mutex_lock(&g->lock);
	if (!g->has_supervisor) {
		pthread_mutex_unlock(&g->lock);
		return;
	}
	g->stopping = true;
	wake_poller(g);
	pthread_cond_broadcast(&g->changed);
	pthread_mutex_unlock(&g->lock);

	pthread_join(g->supervisor, NULL);

	pthread_mutex_lock(&g->lock);
	g->has_supervisor = false;
	g->stopping = false;
	pthread_mutex_unlock(&g->lock);
}
