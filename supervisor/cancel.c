/*
 * cancel.c - stopping tasks: the signals, their order, and the SIGKILL that
 * follows the grace period, for errgroup_cancel, cancel-on-error, and the
 * deadline (timer.c decides when); and errgroup_signal, the same signals
 * sent for the caller.
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
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

/*
 * Sends sig to t's process group, and to t itself where the group may not
 * hold it: a task may leave the group it leads (setpgid to another group
 * of its session) while its children stay, and then the group is reached
 * but never the task, which nothing would stop, and errgroup_free would
 * wait for forever.  SIGKILL goes to t as well in any case: a second one
 * changes nothing.  Any other signal only if t has left its group, since
 * a task that counts its SIGTERMs (a second one meaning "quit hard now")
 * must get one.  getpgid asks by pid, which stays t's while t is
 * unreaped; its only failure, ESRCH, means that someone else reaped t,
 * and then there is nothing more to signal.  Lock held.
 */
void task_signal(struct task *t, int sig)
{
	bool reached;
	pid_t group;
	int r;

	if (t->pidfd >= 0) {
		r = pidfd_signal_group(t->pidfd, sig);
		/* Before 6.9 the group needs kill(); on ESRCH the child has
		 * not yet made its group, and so has no descendants yet. */
		if (r == -EINVAL)
			r = kill(-t->pid, sig);
		reached = r == 0;
	} else {
		reached = kill(-t->pid, sig) == 0;
	}
	if (reached && sig != SIGKILL) {
		group = getpgid(t->pid);
		if (group < 0 || group == t->pid)
			return;
	}
	if (t->pidfd >= 0)
		pidfd_send_signal(t->pidfd, sig, NULL, 0);
	else
		kill(t->pid, sig);
}

/* Asks, without reaping, how t ended: waitid's answer, with si_pid 0 in
 * *si if it has not.  A host that traces its own task also gets the
 * task's ptrace stops from waitid, whatever the options ("traditionally",
 * says the kernel): those are not ends, and WNOWAIT leaves them to the
 * host. */
static int peek_end(struct task *t, siginfo_t *si)
{
	int r;

	do {
		memset(si, 0, sizeof *si);
		if (t->pidfd >= 0)
			r = waitid(P_PIDFD, (id_t)t->pidfd, si, WEXITED | WNOHANG | WNOWAIT);
		else
			r = waitid(P_PID, (id_t)t->pid, si, WEXITED | WNOHANG | WNOWAIT);
	} while (r < 0 && errno == EINTR);
	if (r == 0 && si->si_code != CLD_EXITED && si->si_code != CLD_KILLED &&
	    si->si_code != CLD_DUMPED)
		si->si_pid = 0;
	return r;
}

/* True once the child has exited (or someone else reaped it); leaves it
 * unreaped. */
bool task_has_exited(struct task *t)
{
	siginfo_t si;

	return peek_end(t, &si) < 0 || si.si_pid != 0;
}

/*
 * SIGKILL to whatever is left of an ended task's process group, however
 * the task ended: what it started in its group does not outlive it, even
 * a descendant that closed the lifeline.  Through the pidfd where the
 * kernel can (6.9), which never reaches a reused id; else by the group's
 * id, and only while the leader is our unreaped zombie, which holds that
 * id: a host that reaped it first (SIGCHLD ignored) may have let the id
 * go to a stranger.
 */
void task_kill_leftovers(struct task *t)
{
	siginfo_t si;

	if (t->pidfd >= 0 && pidfd_signal_group(t->pidfd, SIGKILL) != -EINVAL)
		return;
	if (peek_end(t, &si) == 0 && si.si_pid != 0)
		kill(-t->pid, SIGKILL);
}

/* Sends t SIGTERM, and SIGCONT so that a stopped child sees it, or SIGKILL
 * when there is no grace period.  Lock held. */
void task_stop(errgroup *g, struct task *t)
{
	t->signaled = true;
	if (g->grace_ms == 0) {
		task_signal(t, SIGKILL);
		return;
	}
	task_signal(t, SIGTERM);
	task_signal(t, SIGCONT);
}

/* Stops every running task not yet signalled, marking each timed out or
 * not, and sets the SIGKILL that ends the grace period.  A task that has
 * already exited, reaped or not (an unreapable one is dead, poll.c), ended
 * on its own before the group did anything, and is left to say how: a
 * failure stays its own, not CANCELED, and a success stays one.
 * Idempotent: start.c calls it again for a task whose start was under
 * way.  Lock held. */
static void stop_all(errgroup *g, bool timed_out)
{
	uint64_t kill_at = now_ns() + (uint64_t)g->grace_ms * 1000000u;
	bool signalled = false;
	struct task *t;

	RB_FOREACH(t, task_tree, &g->tasks) {
		if (t->signaled || t->unreapable || task_has_exited(t))
			continue;
		t->timed_out = timed_out;
		task_stop(g, t);
		/* Its SIGKILL is the group's now, not its own timer's. */
		timer_stop(g, t);
		signalled = true;
	}
	if (signalled && g->grace_ms > 0) {
		/* One deadline for the group; a late task gets at least its
		 * full grace, the others a little more. */
		if (g->kill_at_ns < kill_at)
			g->kill_at_ns = kill_at;
		/* The SIGKILL must come even if no caller is waiting; with no
		 * thread to time the grace, it comes now. */
		if (supervisor_ensure(g) < 0)
			cancel_escalate(g);
		wake_poller(g);
	}
	pthread_cond_broadcast(&g->changed);
}

/* Cancels the group: final, and every running task is stopped.  A
 * deadline that has already passed came first, whether or not anyone had
 * noticed it yet.  Lock held. */
void group_cancel_locked(errgroup *g)
{
	group_past_deadline(g);
	g->canceled = true;
	if (!g->closed_by)
		g->closed_by = -ECANCELED;
	stop_all(g, false);
}

/* The deadline has passed: final, and every running task is stopped as
 * timed out.  Lock held. */
void group_expire_locked(errgroup *g)
{
	g->expired = true;
	if (!g->closed_by)
		g->closed_by = -ETIMEDOUT;
	stop_all(g, true);
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

/*
 * Sends sig to every task still running, as task_signal does, and counts
 * them; not a cancellation: the group goes on, and what the signal does
 * to a task is the task's own end (SIGNALED, say, not CANCELED).  A task
 * that has exited, reaped or not, is left out, as stop_all leaves it: its
 * process group may be gone, or on its way to a stranger.  A task whose
 * start is under way in another thread is not in the tree yet, and
 * misses the signal, as a task started just after this call would.
 * waitid (task_has_exited) is a cancellation point, hence cancellation
 * off.
 */
EXPORT int errgroup_signal(errgroup *g, int sig)
{
	int cancellation, n = 0;
	struct task *t;

	if (sig < 0 || sig > SIGRTMAX)
		return -EINVAL;
	if (group_is_foreign(g))
		return -ECHILD;
	cancellation = cancellation_off();
	pthread_mutex_lock(&g->lock);
	RB_FOREACH(t, task_tree, &g->tasks) {
		if (t->unreapable || task_has_exited(t))
			continue;
		task_signal(t, sig);
		n++;
	}
	pthread_mutex_unlock(&g->lock);
	cancellation_restore(cancellation);
	return n;
}

EXPORT void errgroup_cancel(errgroup *g)
{
	int cancellation;

	if (group_is_foreign(g))
		return;
	cancellation = cancellation_off();
	pthread_mutex_lock(&g->lock);
	group_cancel_locked(g);
	pthread_mutex_unlock(&g->lock);
	cancellation_restore(cancellation);
}
