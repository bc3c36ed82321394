/*
 * cancel.c - stopping tasks: the signals, their order, and the SIGKILL that
 * follows the grace period.
 *
 * Each task leads its own process group (child.c), so the group is what we
 * signal: a task's pipeline and grandchildren stop with it.  Signals go
 * through the pidfd whenever the kernel allows, which never reaches a
 * stranger that reused the pid; the pid is used only while the child is
 * still unreaped, when no one else can have it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <sys/pidfd.h>

#include "internal.h"

void task_signal(struct task *t, int sig)
{
	int r;

	if (t->pidfd >= 0) {
		r = pidfd_signal_group(t->pidfd, sig);
		if (r == 0)
			return;
		/* Before 6.9 the group needs kill(); on ESRCH the child has
		 * not yet made its group, and so has no descendants yet. */
		if (r == -EINVAL && kill(-t->pid, sig) == 0)
			return;
		pidfd_send_signal(t->pidfd, sig, NULL, 0);
		return;
	}
	if (kill(-t->pid, sig) < 0)
		kill(t->pid, sig);
}

/*
 * Marks the group canceled and sends SIGTERM (and SIGCONT, so that a
 * stopped child sees it) to every running task not yet signalled, or
 * SIGKILL with a zero grace period.  Idempotent: start.c calls it again for
 * a task whose fork was under way when the group was canceled.  Lock held.
 */
void group_cancel_locked(errgroup *g)
{
	uint64_t kill_at = now_ns() + (uint64_t)g->grace_ms * 1000000u;
	bool signalled = false;
	struct task *t;

	g->canceled = true;
	RB_FOREACH(t, task_tree, &g->tasks) {
		if (t->signaled)
			continue;
		t->signaled = true;
		signalled = true;
		if (g->grace_ms == 0) {
			task_signal(t, SIGKILL);
			continue;
		}
		task_signal(t, SIGTERM);
		task_signal(t, SIGCONT);
	}
	if (signalled && g->grace_ms > 0) {
		/* One deadline for the group; a late task gets at least its
		 * full grace, the others a little more. */
		if (g->kill_at_ns < kill_at)
			g->kill_at_ns = kill_at;
		/* The SIGKILL must come even if no caller is waiting. */
		supervisor_ensure(g);
		wake_poller(g);
	}
	pthread_cond_broadcast(&g->changed);
}

/* The grace period is over: SIGKILL whatever got SIGTERM.  Lock held. */
void cancel_escalate(errgroup *g)
{
	struct task *t;

	g->kill_at_ns = 0;
	RB_FOREACH(t, task_tree, &g->tasks)
		if (t->signaled)
			task_signal(t, SIGKILL);
}

EXPORT void errgroup_cancel(errgroup *g)
{
	if (group_is_foreign(g))
		return;
	pthread_mutex_lock(&g->lock);
	group_cancel_locked(g);
	pthread_mutex_unlock(&g->lock);
}
