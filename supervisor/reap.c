/*
 * reap.c - collect a child that has exited: its status, its last message,
 * and the error it becomes, if any.
 *
 * The exit status is taken with waitid() on the pidfd (on the pid when the
 * kernel has no pidfds), never with waitpid(-1), so the host's own children
 * stay the host's.  If something else took the status first (the host
 * ignores SIGCHLD, so the kernel reaps, or the host calls waitpid(-1)), the
 * kernel still keeps it for pidfds since Linux 6.15; failing that, the task
 * is reported as an error whose status was lost, never as a success.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "internal.h"

struct outcome {
	bool lost;          /* nobody can tell how it ended */
	bool killed;        /* by a signal (code = signal), else exited (code = status) */
	bool dumped;
	int code;
};

/* The wait status waitpid() would have given, for errgroup_exit. */
static int outcome_wstatus(const struct outcome *o)
{
	if (o->lost)
		return -1;
	if (o->killed)
		return o->code | (o->dumped ? 0x80 : 0);
	return (o->code & 0xff) << 8;
}

static void describe_end(char *buf, size_t size, const char *prefix, const struct outcome *o)
{
	const char *abbrev;

	if (o->lost) {
		snprintf(buf, size, "%sexit status lost: the child was reaped by someone else", prefix);
	} else if (o->killed) {
		abbrev = sigabbrev_np(o->code);
		snprintf(buf, size, "%skilled by signal %d (SIG%s)%s", prefix, o->code,
			 abbrev ? abbrev : "?", o->dumped ? ", core dumped" : "");
	} else {
		snprintf(buf, size, "%sexited with status %d", prefix, o->code);
	}
}

static void outcome_from_wstatus(struct outcome *o, int wstatus)
{
	if (WIFSIGNALED(wstatus)) {
		o->killed = true;
		o->code = WTERMSIG(wstatus);
		o->dumped = WCOREDUMP(wstatus);
	} else {
		o->code = WEXITSTATUS(wstatus);
	}
}

/* A status the kernel has not yet recorded is asked for at this many
 * sweeps (SWEEP_MS apart, poll.c) before it is called lost. */
#define EXIT_STATUS_ASKS 50

/* Returns 1 with the outcome, 0 if the child has not exited yet or its
 * status is not yet to be had.  The child must be known to have exited
 * (reap_task). */
static int collect(struct task *t, struct outcome *o)
{
	siginfo_t si;
	int r, wstatus;

	memset(o, 0, sizeof *o);
	do {
		memset(&si, 0, sizeof si);
		if (t->pidfd >= 0)
			r = waitid(P_PIDFD, (id_t)t->pidfd, &si, WEXITED | WNOHANG);
		else
			r = waitid(P_PID, (id_t)t->pid, &si, WEXITED | WNOHANG);
	} while (r < 0 && errno == EINTR);

	if (r == 0) {
		if (si.si_pid == 0)
			return 0;
		o->killed = si.si_code == CLD_KILLED || si.si_code == CLD_DUMPED;
		o->dumped = si.si_code == CLD_DUMPED;
		o->code = si.si_status;
		return 1;
	}
	/* Reaped by someone else: the kernel keeps the status for pidfds
	 * (6.15), a moment after the pidfd turns readable (pidfd.c).  The
	 * sweep asks again (poll.c); the bound is for a kernel that would
	 * never say. */
	r = t->pidfd >= 0 ? pidfd_exit_status(t->pidfd, &wstatus) : -ENOTTY;
	if (r == -EAGAIN && t->exit_status_asked++ < EXIT_STATUS_ASKS)
		return 0;
	if (r == 0)
		outcome_from_wstatus(o, wstatus);
	else
		o->lost = true;
	return 1;
}

/* An end record from the stock that start_task keeps full: one for every
 * running task.  Lock held. */
static struct task_end *take_spare(errgroup *g)
{
	struct task_end *e = g->spare_ends;

	g->spare_ends = e->next_spare;
	g->spare_count--;
	e->failed = false;
	e->exit.error = NULL;
	return e;
}

/* How a task ended, as the group reports it. */
struct verdict {
	enum errgroup_cause cause;  /* 0: a success */
	int code;
	const char *prefix;         /* of the description of its status */
	bool returned;              /* described as "returned CODE" instead */
};

static struct verdict judge(const struct task *t, const struct outcome *o)
{
	struct verdict v = { 0, 0, "", false };
	int status_code = o->lost ? -1 : o->code;

	if (t->timed_out) {
		/* Even a clean exit: it did not finish in its time. */
		v.cause = ERRGROUP_TIMEOUT;
		v.code = status_code;
		v.prefix = "timed out: ";
	} else if (!o->lost && !o->killed && o->code == 0) {
		v.cause = 0;
	} else if (t->signaled) {
		v.cause = ERRGROUP_CANCELED;
		v.code = status_code;
		v.prefix = "canceled: ";
	} else if (o->lost && !t->returned) {
		/* A task that returned nonzero said so on the channel; its
		 * code does not need the status. */
		v.cause = ERRGROUP_EXITED;
		v.code = -1;
	} else if (o->killed) {
		v.cause = ERRGROUP_SIGNALED;
		v.code = o->code;
	} else if (t->returned) {
		v.cause = ERRGROUP_RETURNED;
		v.code = t->returned_code;
		v.returned = true;
	} else {
		v.cause = ERRGROUP_EXITED;
		v.code = o->code;
	}
	return v;
}

/* Files t's end where it belongs: the error list if it failed, the queue
 * for errgroup_reap if the caller asked for one; a success that nobody
 * asked about is not recorded at all. */
static void record_end(errgroup *g, struct task *t, const struct verdict *v,
		       const struct outcome *o)
{
	struct task_end *e;

	if (!v->cause && g->ended_fd < 0)
		return;
	e = take_spare(g);
	e->exit.task = t->index;
	e->exit.pid = t->pid;
	e->exit.status = outcome_wstatus(o);
	if (v->cause) {
		e->failed = true;
		e->error.task = t->index;
		e->error.pid = t->pid;
		e->error.cause = v->cause;
		e->error.code = v->code;
		if (v->returned)
			snprintf(e->description, sizeof e->description, "returned %d", v->code);
		else
			describe_end(e->description, sizeof e->description, v->prefix, o);
		if (t->message) {
			e->error.message = t->message;
			t->message = NULL;
		} else {
			e->error.message = e->description;
		}
		e->exit.error = &e->error;
		/* Capacity was reserved when the task started (start.c). */
		g->errors[g->error_count++] = e;
	}
	if (g->ended_fd >= 0)
		ended_push(g, e);
	if (v->cause && v->cause != ERRGROUP_CANCELED && g->cancel_on_error)
		group_cancel_locked(g);
}

/*
 * Reaps t if it has exited: records how it ended, and removes it from the
 * group.  Returns false (and changes nothing) if it still runs.  Called
 * with g->lock held.
 */
bool reap_task(errgroup *g, struct task *t)
{
	struct outcome o;
	struct verdict v;

	/* With a pidfd, a task comes here once its pidfd is readable: it
	 * has exited, and a dead child has no ptrace stop to report.  Without
	 * one the sweep asks about running tasks, and a plain waitid would
	 * take a stop report from a host that traces the task: peek first.
	 * So for a stopped task, whose leftovers must not be killed before
	 * it has exited. */
	if ((t->pidfd < 0 || t->signaled) && !task_has_exited(t))
		return false;
	/* Before the reap, which lets the group's id go. */
	task_kill_leftovers(t);
	if (!collect(t, &o))
		return false;
	/* Every frame the child sent is queued by now, and they matter only
	 * if it failed: a RETURNED frame carries its whole code, a message
	 * its text.  A clean exit's frames are read in the poller's round
	 * (poll.c), and dropped, their sender being no longer a task; so a
	 * task that sends nothing costs no read. */
	if (t->timed_out || o.lost || o.killed || o.code != 0)
		channel_drain(g);
	v = judge(t, &o);

	RB_REMOVE(task_tree, &g->tasks, t);
	RB_REMOVE(pid_tree, &g->tasks_by_pid, t);
	timer_stop(g, t);
	g->running--;
	if (t->unreapable)
		g->unreapable--;
	record_end(g, t, &v, &o);
	task_release(g, t);
	pthread_cond_broadcast(&g->changed);
	return true;
}
