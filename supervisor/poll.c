/*
 * poll.c - the poller role: one thread at a time waits on the group's
 * epoll set and handles what it reports (exits, messages, timers).
 *
 * Whoever needs the group to progress takes the role: errgroup_wait, an
 * errgroup_go blocked at the limit, or the supervisor thread.  The others
 * sleep on g->changed, which the poller broadcasts after every round, so
 * that each of them re-checks its own condition and one takes the role
 * when the poller leaves.  Once a group has a supervisor thread, it alone
 * polls, so that events are handled while no caller waits.
 *
 * Events are one-shot and keyed by task index, which the group never
 * reuses.  An event for a task that is gone (its fd was still shared with
 * a child that had not yet closed it at fork, see fdreg.c) finds no task
 * and is dropped; a one-shot registration fires at most once, so such a
 * stale registration cannot spin the poller.
 *
 * Without pidfds (old kernels, valgrind, seccomp), exits are noticed by
 * the lifeline pipe losing its reader and, because the child closes its
 * files a moment before it becomes reapable (and a task may hand the read
 * end on), by a sweep of waitid(WNOHANG) every SWEEP_MS.  With pidfds the
 * sweep retries only a dead task that is not yet ours to reap: one traced
 * by another process, whose tracer must see it die first; or one the
 * kernel reaped itself (the host ignores SIGCHLD) and whose status it has
 * not yet recorded for pidfds (pidfd.c).  Its pidfd is readable all the
 * while, so re-arming it would make the poller spin.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define MAX_EVENTS 64
#define SWEEP_MS 20

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void wake_poller(errgroup *g)
{
	uint64_t one = 1;
	ssize_t n;

	do
		n = write(g->wake_fd, &one, sizeof one);
	while (n < 0 && errno == EINTR);
}

/* Whether the group's tasks need the waitid sweep (see above). */
static bool needs_sweep(errgroup *g)
{
	return (g->running > 0 && pidfd_supported() <= 0) || g->unreapable > 0;
}

/* How long the poller may sleep: until the SIGKILL of a grace period,
 * a task's timer, the deadline or the next sweep, whichever comes
 * first. */
static int timeout_ms(errgroup *g)
{
	uint64_t next = timer_next_ns(g), now;

	if (g->kill_at_ns && (!next || g->kill_at_ns < next))
		next = g->kill_at_ns;
	if (needs_sweep(g)) {
		uint64_t sweep = g->swept_ns + SWEEP_MS * UINT64_C(1000000);

		if (!next || sweep < next)
			next = sweep;
	}
	if (!next)
		return -1;
	now = now_ns();
	if (next <= now)
		return 0;
	/* Round up: waking early would only spin. */
	return (next - now + 999999) / 1000000 > INT_MAX ?
	       INT_MAX : (int)((next - now + 999999) / 1000000);
}

static void handle_event(errgroup *g, uint64_t key)
{
	struct task *t;

	switch ((enum event_kind)(key & 3)) {
	case EVENT_WAKE: {
		uint64_t count;

		/* EAGAIN: an earlier round took it already. */
		if (read(g->wake_fd, &count, sizeof count) < 0)
			return;
		return;
	}
	case EVENT_MESSAGE:
		channel_drain(g);
		return;
	case EVENT_EXIT:
		t = task_find(g, (int)(key >> 2));
		/* Without pidfds the lifeline reports the exit; the sweep
		 * takes over if the child had not quite exited yet. */
		if (t && !reap_task(g, t) && t->pidfd >= 0 && !t->unreapable) {
			t->unreapable = true;
			g->unreapable++;
		}
		return;
	}
}

/*
 * A sweep costs a waitid per running task, so it runs once per
 * SWEEP_MS, not once per round: go() makes a non-blocking round
 * for every task it starts, and sweeping in each made starting N tasks
 * cost O(N^2) system calls (5 000 children took 8-13 s instead of 1.6 s).
 */
static void sweep(errgroup *g)
{
	struct task *t, *next;
	uint64_t now = now_ns();
	bool reaped = false;

	if (now - g->swept_ns < SWEEP_MS * UINT64_C(1000000))
		return;
	g->swept_ns = now;
	RB_FOREACH_SAFE(t, task_tree, &g->tasks, next)
		if ((t->pidfd < 0 || t->unreapable) && reap_task(g, t))
			reaped = true;
	/* What the tasks that succeeded sent, before anyone else can take
	 * their pids (see round_once). */
	if (reaped)
		channel_drain(g);
}

/* One round: wait up to the next timer (or not at all), handle what came.
 * Called with the lock held and the role taken; returns likewise. */
static void round_once(errgroup *g, bool block)
{
	struct epoll_event events[MAX_EVENTS];
	int n, timeout = block ? timeout_ms(g) : 0;

	pthread_mutex_unlock(&g->lock);
	n = epoll_wait(g->epoll_fd, events, MAX_EVENTS, timeout);
	pthread_mutex_lock(&g->lock);
	for (int i = 0; i < n; i++)
		handle_event(g, events[i].data.u64);
	/*
	 * A task that succeeded is reaped without reading the channel
	 * (reap.c); its frames were queued before its exit, so epoll lists
	 * the channel in this round or an earlier one, and they are read and
	 * dropped here.  Unless the round was cut at MAX_EVENTS: then they
	 * are read now, or they could wait, in a group gone idle, until a
	 * later task took the pid and their text.
	 */
	if (n == MAX_EVENTS)
		channel_drain(g);
	if (needs_sweep(g))
		sweep(g);
	if (g->kill_at_ns && g->kill_at_ns <= now_ns())
		cancel_escalate(g);
	timer_run(g);
}

void poll_until(errgroup *g, poll_done_fn *done, void *arg, bool as_supervisor)
{
	while (!done(g, arg)) {
		if (g->polling || (g->has_supervisor && !as_supervisor)) {
			pthread_cond_wait(&g->changed, &g->lock);
			continue;
		}
		g->polling = true;
		round_once(g, true);
		g->polling = false;
		pthread_cond_broadcast(&g->changed);
	}
}

/* Handles whatever is ready now, if no one else is polling: keeps a group
 * whose caller never blocks from piling up zombies and fds. */
void poll_ready(errgroup *g)
{
	if (g->polling || g->has_supervisor || g->running == 0)
		return;
	g->polling = true;
	round_once(g, false);
	g->polling = false;
	pthread_cond_broadcast(&g->changed);
}

static bool all_reaped(errgroup *g, void *unused)
{
	(void)unused;
	return g->running == 0 && g->starting == 0;
}

EXPORT const struct errgroup_error *errgroup_wait(errgroup *g)
{
	const struct errgroup_error *first = NULL;
	int cancellation;

	if (group_is_foreign(g))
		return NULL;
	cancellation = cancellation_off();
	pthread_mutex_lock(&g->lock);
	poll_until(g, all_reaped, NULL, false);
	if (g->error_count > 0)
		first = &g->errors[0]->error;
	pthread_mutex_unlock(&g->lock);
	cancellation_restore(cancellation);
	return first;
}
