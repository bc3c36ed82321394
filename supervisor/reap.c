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

/* Returns 1 with the outcome, 0 if the child has not exited yet.  The
 * child must be known to have exited (reap_task). */
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
	if (t->pidfd >= 0 && pidfd_exit_status(t->pidfd, &wstatus) == 0)
		outcome_from_wstatus(o, wstatus);
	else
		o->lost = true;
	return 1;
}

/* Files t's end where it belongs: the error list if it failed, the queue
 * for errgroup_reap if the caller asked for one; freed if neither. */
static void record_end(errgroup *g, struct task *t, enum errgroup_cause cause, int code,
		       const struct outcome *o)
{
	struct task_end *e = t->end;

	t->end = NULL;
	e->exit.task = t->index;
	e->exit.pid = t->pid;
	e->exit.status = outcome_wstatus(o);
	if (cause) {
		e->failed = true;
		e->error.task = t->index;
		e->error.pid = t->pid;
		e->error.cause = cause;
		e->error.code = code;
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
	else if (!e->failed)
		free(e);
	if (cause && cause != ERRGROUP_CANCELED && g->cancel_on_error)
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
	enum errgroup_cause cause;
	char *description;
	size_t size;
	int code = 0;

	/* With a pidfd, a task comes here once its pidfd is readable: it
	 * has exited, and a dead child has no ptrace stop to report.  Without
	 * one the sweep asks about running tasks, and a plain waitid would
	 * take a stop report from a host that traces the task: peek first.
	 * So for a stopped task, whose leftovers must not be killed before
	 * it has exited. */
	if ((t->pidfd < 0 || t->signaled) && !task_has_exited(t))
		return false;
	/* A stopped task's leftovers in its process group die with it;
	 * while the leader is unreaped its group id cannot be reused. */
	if (t->signaled)
		task_signal(t, SIGKILL);
	if (!collect(t, &o))
		return false;
	/* Every frame the child sent is queued by now. */
	channel_drain(g);

	description = t->end->description;
	size = sizeof t->end->description;
	if (t->timed_out) {
		/* Even a clean exit: it did not finish in its time. */
		cause = ERRGROUP_TIMEOUT;
		code = o.lost ? -1 : o.code;
		describe_end(description, size, "timed out: ", &o);
	} else if (!o.lost && !o.killed && o.code == 0) {
		cause = 0;
	} else if (t->signaled) {
		cause = ERRGROUP_CANCELED;
		code = o.lost ? -1 : o.code;
		describe_end(description, size, "canceled: ", &o);
	} else if (o.lost && !t->returned) {
		/* A task that returned nonzero said so on the channel; its
		 * code does not need the status. */
		cause = ERRGROUP_EXITED;
		code = -1;
		describe_end(description, size, "", &o);
	} else if (o.killed) {
		cause = ERRGROUP_SIGNALED;
		code = o.code;
		describe_end(description, size, "", &o);
	} else if (t->returned) {
		cause = ERRGROUP_RETURNED;
		code = t->returned_code;
		snprintf(description, size, "returned %d", code);
	} else {
		cause = ERRGROUP_EXITED;
		code = o.code;
		describe_end(description, size, "", &o);
	}

	RB_REMOVE(task_tree, &g->tasks, t);
	RB_REMOVE(pid_tree, &g->tasks_by_pid, t);
	timer_stop(g, t);
	g->running--;
	if (t->unreapable)
		g->unreapable--;
	record_end(g, t, cause, code, &o);
	task_free(t);
	pthread_cond_broadcast(&g->changed);
	return true;
}

void task_free(struct task *t)
{
	fdreg_close(t->pidfd);
	fdreg_close(t->lifeline);
	free(t->message);
	free(t->end);
	free(t);
}
