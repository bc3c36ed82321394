/*
 * timer.c - per-task timeouts and the group's deadline.
 *
 * A task started while the group has a timeout gets a timer: an entry in
 * the group's timer tree, ordered by when it fires.  The poller sleeps
 * until the soonest timer (poll.c), so timers cost no thread and no
 * wake-up of their own; a task that ends in time leaves the tree without
 * ever waking anyone.  When a task's timer fires it is stopped (SIGTERM,
 * SIGCONT) and its timer is set again to the end of its grace period, when
 * it gets SIGKILL.  The deadline is one more timer, the group's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <time.h>

#include "internal.h"

int task_compare_timer(const struct task *a, const struct task *b)
{
	if (a->timer_ns != b->timer_ns)
		return a->timer_ns < b->timer_ns ? -1 : 1;
	return (a->index > b->index) - (a->index < b->index);
}

RB_GENERATE(timer_tree, task, by_timer, task_compare_timer)

static void timer_set(errgroup *g, struct task *t, uint64_t at)
{
	timer_stop(g, t);
	t->timer_ns = at;
	RB_INSERT(timer_tree, &g->timers, t);
}

/* A task has just entered the group.  Lock held. */
void timer_start(errgroup *g, struct task *t)
{
	if (g->timeout_ms == 0)
		return;
	timer_set(g, t, now_ns() + (uint64_t)g->timeout_ms * 1000000u);
	/* The poller sleeps until the soonest timer; only a new soonest one
	 * needs it up earlier.  With one timeout for all tasks that is the
	 * first task started while no other timer runs, not every task. */
	if (g->polling && RB_MIN(timer_tree, &g->timers) == t)
		wake_poller(g);
}

/* A task ends or no longer needs its timer.  Lock held. */
void timer_stop(errgroup *g, struct task *t)
{
	if (t->timer_ns == 0)
		return;
	RB_REMOVE(timer_tree, &g->timers, t);
	t->timer_ns = 0;
}

/* When the poller must be up next for a timer or the deadline; 0: never. */
uint64_t timer_next_ns(errgroup *g)
{
	struct task *t = RB_MIN(timer_tree, &g->timers);
	uint64_t next = t ? t->timer_ns : 0;

	if (g->deadline_ns && !g->expired && (!next || g->deadline_ns < next))
		next = g->deadline_ns;
	return next;
}

/* True once the deadline has passed; expires the group when it first
 * notices.  Lock held. */
bool group_past_deadline(errgroup *g)
{
	if (g->expired)
		return true;
	if (!g->deadline_ns || now_ns() < g->deadline_ns)
		return false;
	group_expire_locked(g);
	return true;
}

/* Fires every timer that is due.  Lock held. */
void timer_run(errgroup *g)
{
	uint64_t now = now_ns();
	struct task *t;

	group_past_deadline(g);
	while ((t = RB_MIN(timer_tree, &g->timers)) && t->timer_ns <= now) {
		timer_stop(g, t);
		if (t->timed_out) {
			/* Its grace period is over. */
			task_signal(t, SIGKILL);
			continue;
		}
		/* One that has already exited made it in time. */
		if (task_has_exited(t))
			continue;
		t->timed_out = true;
		task_stop(g, t);
		if (g->grace_ms > 0)
			timer_set(g, t, now + (uint64_t)g->grace_ms * 1000000u);
	}
}

/* A task whose start is under way when the timeout is set gets it too,
 * but its go() decided before that it needed no supervisor: so the
 * timeout's own supervisor starts here. */
EXPORT int errgroup_set_timeout_ms(errgroup *g, unsigned ms)
{
	int r = 0, cancellation;

	if (group_is_foreign(g))
		return -ECHILD;
	cancellation = cancellation_off();
	pthread_mutex_lock(&g->lock);
	g->timeout_ms = ms;
	if (ms > 0 && g->starting > 0)
		r = supervisor_ensure(g);
	pthread_mutex_unlock(&g->lock);
	cancellation_restore(cancellation);
	return r;
}

/* A valid time in nanoseconds.  tv_sec may be up to LONG_MAX, whose
 * nanoseconds no uint64_t holds: wrapped, a deadline some 584 years away
 * would come out in the past and expire the group at once, so one past
 * UINT64_MAX ns is UINT64_MAX, which the clock never reaches. */
static uint64_t timespec_ns(const struct timespec *ts)
{
	uint64_t nsec = (uint64_t)ts->tv_nsec;

	if ((uint64_t)ts->tv_sec > (UINT64_MAX - nsec) / 1000000000u)
		return UINT64_MAX;
	return (uint64_t)ts->tv_sec * 1000000000u + nsec;
}

EXPORT int errgroup_set_deadline(errgroup *g, const struct timespec *abs_monotonic)
{
	uint64_t at = 0;
	int r = 0, cancellation;

	if (abs_monotonic) {
		if (abs_monotonic->tv_nsec < 0 || abs_monotonic->tv_nsec >= 1000000000 ||
		    abs_monotonic->tv_sec < 0)
			return -EINVAL;
		at = timespec_ns(abs_monotonic);
		if (at == 0)
			at = 1;   /* 0 means none */
	}
	if (group_is_foreign(g))
		return -ECHILD;
	cancellation = cancellation_off();
	pthread_mutex_lock(&g->lock);
	/* The deadline being replaced may have passed unnoticed: it is
	 * final all the same. */
	if (!group_past_deadline(g)) {
		g->deadline_ns = at;
		/* Children already running need someone to watch the clock. */
		if (at && g->running + g->starting > 0)
			r = supervisor_ensure(g);
		if (g->polling)
			wake_poller(g);
	}
	pthread_mutex_unlock(&g->lock);
	cancellation_restore(cancellation);
	return r;
}
