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

/* Returns 1 with the outcome, 0 if the child has not exited yet. */
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

/* True once the child has exited (or someone else reaped it); leaves it
 * unreaped. */
static bool has_exited(struct task *t)
{
	siginfo_t si;
	int r;

	do {
		memset(&si, 0, sizeof si);
		if (t->pidfd >= 0)
			r = waitid(P_PIDFD, (id_t)t->pidfd, &si, WEXITED | WNOHANG | WNOWAIT);
		else
			r = waitid(P_PID, (id_t)t->pid, &si, WEXITED | WNOHANG | WNOWAIT);
	} while (r < 0 && errno == EINTR);
	return r < 0 || si.si_pid != 0;
}

static void record_error(errgroup *g, struct task *t, enum errgroup_cause cause, int code)
{
	struct recorded_error *e = t->error;

	t->error = NULL;
	e->public.task = t->index;
	e->public.pid = t->pid;
	e->public.cause = cause;
	e->public.code = code;
	if (t->message) {
		e->public.message = t->message;
		t->message = NULL;
	} else {
		e->public.message = e->description;
	}
	/* Capacity was reserved when the task started (start.c). */
	g->errors[g->error_count++] = e;
	if (g->cancel_on_error && cause != ERRGROUP_CANCELED)
		group_cancel_locked(g);
}

/*
 * Reaps t if it has exited: records its error, if any, and removes it from
 * the group.  Returns false (and changes nothing) if it still runs.
 * Called with g->lock held.
 */
bool reap_task(errgroup *g, struct task *t)
{
	struct outcome o;
	enum errgroup_cause cause;
	char *description;
	int code = 0;

	/* A canceled task's leftovers in its process group die with it;
	 * while the leader is unreaped its group id cannot be reused.  Not
	 * before the task has exited: the fallback sweep asks about tasks
	 * still in their grace period. */
	if (t->signaled) {
		if (!has_exited(t))
			return false;
		task_signal(t, SIGKILL);
	}
	if (!collect(t, &o))
		return false;
	/* Every frame the child sent is queued by now. */
	channel_drain(g);

	description = t->error->description;
	if (!o.lost && !o.killed && o.code == 0) {
		cause = 0;
	} else if (t->signaled) {
		cause = ERRGROUP_CANCELED;
		code = o.lost ? -1 : o.code;
		describe_end(description, sizeof t->error->description, "canceled: ", &o);
	} else if (o.lost && !t->returned) {
		/* A task that returned nonzero said so on the channel; its
		 * code does not need the status. */
		cause = ERRGROUP_EXITED;
		code = -1;
		describe_end(description, sizeof t->error->description, "", &o);
	} else if (o.killed) {
		cause = ERRGROUP_SIGNALED;
		code = o.code;
		describe_end(description, sizeof t->error->description, "", &o);
	} else if (t->returned) {
		cause = ERRGROUP_RETURNED;
		code = t->returned_code;
		snprintf(description, sizeof t->error->description, "returned %d", code);
	} else {
		cause = ERRGROUP_EXITED;
		code = o.code;
		describe_end(description, sizeof t->error->description, "", &o);
	}

	RB_REMOVE(task_tree, &g->tasks, t);
	RB_REMOVE(pid_tree, &g->tasks_by_pid, t);
	g->running--;
	if (cause)
		record_error(g, t, cause, code);
	task_free(t);
	pthread_cond_broadcast(&g->changed);
	return true;
}

void task_free(struct task *t)
{
	fdreg_close(t->pidfd);
	fdreg_close(t->lifeline);
	free(t->message);
	free(t->error);
	free(t);
}
