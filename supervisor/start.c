/*
 * start.c - errgroup_go and errgroup_try_go: take a slot, start the child,
 * and put the new task under watch.
 *
 * The slot is reserved under the group lock (g->starting), the child is
 * started without it (forking a large host takes long, and the poller must
 * go on meanwhile), and the task gets its index and enters the trees under
 * the lock again.  A cancel or a deadline that comes while the child starts
 * is applied to the new task as soon as it is in the trees.  Function tasks
 * are forked here; commands are started by command.c through the same
 * path.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

struct call {
	errgroup_task *fn;
	void *arg;
};

static bool slot_free(errgroup *g, void *unused)
{
	(void)unused;
	return g->canceled || g->expired || g->limit < 0 ||
	       g->running + g->starting < g->limit;
}

/* Kills and reaps a child that never became a task: through its pidfd
 * when it has one, which never names a stranger; else by its pid, which
 * is still its own while the child is ours and unreaped. */
void abort_child(pid_t pid, int pidfd)
{
	siginfo_t si;
	int r;

	if (pidfd >= 0) {
		pidfd_send_signal(pidfd, SIGKILL, NULL, 0);
		do
			r = waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED);
		while (r < 0 && errno == EINTR);
		return;
	}
	kill(pid, SIGKILL);
	do
		r = waitpid(pid, NULL, 0);
	while (r < 0 && errno == EINTR);
}

/*
 * Makes sure that every task that may end can be recorded without an
 * allocation: room in the error list, and a spare end record for each
 * task that is running or starting, this one included.  In a group whose
 * tasks succeed the stock stays full and this allocates nothing.  Lock
 * held.
 */
static int reserve_records(errgroup *g)
{
	size_t tasks = (size_t)g->running + (size_t)g->starting + 1;
	size_t need = g->error_count + tasks;
	struct task_end **grown;
	size_t capacity;

	if (need > g->error_capacity) {
		capacity = g->error_capacity ? g->error_capacity * 2 : 16;
		while (capacity < need)
			capacity *= 2;
		grown = realloc(g->errors, capacity * sizeof *grown);
		if (!grown)
			return -ENOMEM;
		g->errors = grown;
		g->error_capacity = capacity;
	}
	while (g->spare_count < tasks) {
		struct task_end *e = malloc(sizeof *e);

		if (!e)
			return -ENOMEM;
		e->next_spare = g->spare_ends;
		g->spare_ends = e;
		g->spare_count++;
	}
	return 0;
}

/*
 * Forks the child, which waits at its gate (see open_gate).  The channel's
 * fds live as long as the group.  What the parent writes between forks is
 * in parentmem or on this stack (see parentmem.c): the fd registry's copy
 * for the child included, which the atfork prepare handler fills in.
 */
CHILD_CODE
static int spawn_call(errgroup *g, const void *what, struct task *t)
{
	const struct call *c = what;
	struct fdreg_snapshot inherited;
	/* The child sees the group as zeroes: what it needs is copied here. */
	struct task_fds kept = { g->channel_tx, -1, g->channel_dev, g->channel_ino };
	int lifeline[2], r, gate_signal = SIGNAL_GATE, cancel_state = t->cancel_state, pidfds;
	pid_t parent = g->owner, pid;
	sigset_t all, saved;

	pidfds = pidfd_supported();
	if (pidfds < 0)
		return pidfds;
	r = fdreg_pipe(lifeline);
	if (r < 0)
		return r;
	kept.lifeline = lifeline[0];
	/* No host signal handler may run in the child before it resets
	 * the dispositions; the child unblocks once it has. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &saved);
	/* Output the host buffered would otherwise be written by the child
	 * too, when the task flushes stdio; signals are blocked first, so
	 * that no handler buffers more in between. */
	flush_pending_output();
	r = fdreg_snapshot_at_fork(&inherited);
	if (r < 0) {
		pthread_sigmask(SIG_SETMASK, &saved, NULL);
		goto fail;
	}
	pid = fork();
	if (pid == 0)
		child_run(&inherited, &kept, gate_signal, parent, cancel_state, c->fn, c->arg);
	r = -errno;
	fdreg_snapshot_done(&inherited);
	pthread_sigmask(SIG_SETMASK, &saved, NULL);
	if (pid < 0)
		goto fail;
	fdreg_close(lifeline[0]);
	if (pidfds) {
		t->pidfd = fdreg_pidfd_open(pid);
		if (t->pidfd < 0) {
			r = t->pidfd;
			abort_child(pid, -1);
			fdreg_close(lifeline[1]);
			return r;
		}
	}
	t->pid = pid;
	t->lifeline = lifeline[1];
	t->at_gate = true;
	return 0;

fail:
	fdreg_close(lifeline[0]);
	fdreg_close(lifeline[1]);
	return r;
}

/* Puts the task's exit in the group's epoll set: the pidfd turns readable
 * when the child has exited.  Without pidfds, the lifeline's write end
 * reports an error once no reader is left, which is the child's exit
 * unless it handed the read end on (poll.c sweeps for those). */
static int watch(errgroup *g, struct task *t)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT,
				  .data.u64 = event_key(t->index, EVENT_EXIT) };

	if (t->pidfd >= 0)
		return epoll_ctl(g->epoll_fd, EPOLL_CTL_ADD, t->pidfd, &ev) < 0 ? -errno : 0;
	ev.events = EPOLLONESHOT;   /* EPOLLERR is always reported */
	return epoll_ctl(g->epoll_fd, EPOLL_CTL_ADD, t->lifeline, &ev) < 0 ? -errno : 0;
}

/*
 * Lets a forked child run the task.  Only once the task is in the pid tree:
 * the channel attributes frames by sender pid, and a poller in another
 * thread would drop a frame (the task's RETURNED code, its message) that
 * arrived before.  A signal, not a write to the lifeline: a write would
 * fire the lifeline.  Plain, not queued with a value: the kernel never
 * refuses a plain one, where a queued one fails once the user's pending
 * signals reach RLIMIT_SIGPENDING, which a task can bring about, and the
 * child would wait forever.  The kernel stamps it with our pid, by which
 * the child tells it from a stray (child.c); past that limit it delivers
 * it unstamped, which the child takes for the gate as well.  The child is
 * ours and unreaped, so its pid is safe to use without a pidfd.  If it
 * already died, reaping will tell.  Lock held.
 */
static void open_gate(struct task *t)
{
	if (t->pidfd >= 0)
		pidfd_send_signal(t->pidfd, SIGNAL_GATE, NULL, 0);
	else
		kill(t->pid, SIGNAL_GATE);
}

/* Wakes whoever waits for a start to end, when it ended in failure: no
 * event is coming for it.  Lock held. */
static void start_failed(errgroup *g)
{
	if (g->polling)
		wake_poller(g);
	pthread_cond_broadcast(&g->changed);
}

/* Why the group takes no task now, or 0.  Lock held. */
static int refusal(errgroup *g)
{
	group_past_deadline(g);
	return g->closed_by;
}

/*
 * A request to cancel the caller that came while it waited for room acts
 * now, with nothing held: go() does not return and starts nothing.  Left
 * pending, it would be copied into the task by the fork.  The lock is let
 * go meanwhile.
 */
static void act_on_cancellation(errgroup *g, int cancellation)
{
	pthread_mutex_unlock(&g->lock);
	pthread_setcancelstate(cancellation, NULL);
	pthread_testcancel();
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	pthread_mutex_lock(&g->lock);
}

/* Lock held; taken back if let go.  cancellation: the caller's state, as
 * go_cancellation_off left it. */
static int start_locked(errgroup *g, spawn_fn *spawn, const void *what, bool block,
			int cancellation)
{
	struct task *t;
	int r;

	/* A deadline that has passed closes the group, even before the
	 * supervisor notices: try_go at the limit would say -EAGAIN. */
	group_past_deadline(g);
	/* Reap what has ended, so that try_go finds the room it frees and an
	 * unlimited group does not pile up zombies; a go() that must wait for
	 * room reaps in poll_until instead, saving a round that finds nothing. */
	if (!block || slot_free(g, NULL))
		poll_ready(g);
	while (!slot_free(g, NULL)) {
		if (!block)
			return -EAGAIN;
		poll_until(g, slot_free, NULL, false);
		if (cancellation == PTHREAD_CANCEL_ENABLE)
			act_on_cancellation(g, cancellation);
	}
	r = refusal(g);
	if (r < 0)
		return r;
	if (g->cancel_on_error || g->timeout_ms > 0 || g->deadline_ns > 0) {
		r = supervisor_ensure(g);
		if (r < 0)
			return r;
	}
	r = reserve_records(g);
	if (r < 0)
		return r;
	t = task_alloc(g);
	if (!t)
		return -ENOMEM;
	t->cancel_state = cancellation;
	g->starting++;
	pthread_mutex_unlock(&g->lock);

	r = spawn(g, what, t);

	pthread_mutex_lock(&g->lock);
	g->starting--;
	if (r < 0) {
		task_release(g, t);
		start_failed(g);
		return r;
	}
	t->index = g->next_index++;
	r = watch(g, t);
	if (r < 0) {
		g->next_index--;
		start_failed(g);
		pthread_mutex_unlock(&g->lock);
		abort_child(t->pid, t->pidfd);
		pthread_mutex_lock(&g->lock);
		task_release(g, t);
		return r;
	}
	RB_INSERT(task_tree, &g->tasks, t);
	RB_INSERT(pid_tree, &g->tasks_by_pid, t);
	g->running++;
	if (t->at_gate)
		open_gate(t);
	timer_start(g, t);
	/* What happened while the child started applies to it too. */
	if (g->canceled)
		group_cancel_locked(g);
	if (g->expired)
		group_expire_locked(g);
	return t->index;
}

/* Cancellation off: see go_cancellation_off.  A thread canceled while it
 * waited for room would leave the poller role taken, or the lock held. */
int start_task(errgroup *g, spawn_fn *spawn, const void *what, bool block)
{
	int cancellation, r;

	if (group_is_foreign(g))
		return -ECHILD;
	cancellation = go_cancellation_off();
	pthread_mutex_lock(&g->lock);
	r = start_locked(g, spawn, what, block, cancellation);
	pthread_mutex_unlock(&g->lock);
	go_cancellation_restore(cancellation);
	return r;
}

EXPORT int errgroup_go(errgroup *g, errgroup_task *fn, void *arg)
{
	struct call c = { fn, arg };

	if (!fn)
		return -EINVAL;
	return start_task(g, spawn_call, &c, true);
}

EXPORT int errgroup_try_go(errgroup *g, errgroup_task *fn, void *arg)
{
	struct call c = { fn, arg };

	if (!fn)
		return -EINVAL;
	return start_task(g, spawn_call, &c, false);
}
