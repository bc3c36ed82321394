/*
 * group.c - the group object: creation, settings, the error list, the
 * stock of task structs, and errgroup_free.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

int task_compare(const struct task *a, const struct task *b)
{
	return (a->index > b->index) - (a->index < b->index);
}

RB_GENERATE(task_tree, task, by_index, task_compare)

int task_compare_pid(const struct task *a, const struct task *b)
{
	return (a->pid > b->pid) - (a->pid < b->pid);
}

RB_GENERATE(pid_tree, task, by_pid, task_compare_pid)

uint64_t event_key(int index, enum event_kind kind)
{
	return ((uint64_t)(uint32_t)index << 2) | kind;
}

struct task *task_find(errgroup *g, int index)
{
	struct task key = { .index = index };

	return RB_FIND(task_tree, &g->tasks, &key);
}

struct task *task_find_pid(errgroup *g, pid_t pid)
{
	struct task key = { .pid = pid };

	return RB_FIND(pid_tree, &g->tasks_by_pid, &key);
}

/* A group inherited through fork() must not act: its children are not the
 * inheritor's, and its fds were closed in the child (fdreg.c).  Asked
 * before g->lock is taken: another thread of the parent may have held the
 * lock at the fork, and in the child no one would ever release it.  The
 * group is in parentmem, which reads as zeroes in a child, so no system
 * call is needed to tell; where the kernel does not wipe, the owner's pid
 * does.  Neither field ever changes, so reading them needs no lock. */
bool group_is_foreign(const errgroup *g)
{
	if (!g->live)
		return true;
	return !parentmem_wipes() && g->owner != getpid();
}

/* A task struct from the stock, zeroed but for the fds; NULL if out of
 * memory.  Lock held. */
struct task *task_alloc(errgroup *g)
{
	struct task *t = g->free_tasks;

	if (!t) {
		struct task_chunk *c = parentmem_alloc(sizeof *c);

		if (!c)
			return NULL;
		c->next = g->task_chunks;
		g->task_chunks = c;
		for (int i = TASKS_PER_CHUNK - 1; i >= 0; i--) {
			c->tasks[i].next_free = t;
			t = &c->tasks[i];
		}
	}
	g->free_tasks = t->next_free;
	memset(t, 0, sizeof *t);
	t->pidfd = -1;
	t->lifeline = -1;
	return t;
}

/* Closes what t holds and returns it to the stock.  Lock held. */
void task_release(errgroup *g, struct task *t)
{
	fdreg_close(t->pidfd);
	fdreg_close(t->lifeline);
	free(t->message);
	t->next_free = g->free_tasks;
	g->free_tasks = t;
}

static errgroup *group_new(void)
{
	struct epoll_event ev = { .events = EPOLLIN };
	errgroup *g;
	int r;

	g = parentmem_alloc(sizeof *g);
	if (!g)
		return NULL;
	g->live = true;
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->changed, NULL);
	g->owner = getpid();
	g->limit = -1;
	g->grace_ms = ERRGROUP_DEFAULT_GRACE_MS;
	g->wake_fd = -1;
	g->channel_rx = -1;
	g->channel_tx = -1;
	g->ended_fd = -1;
	RB_INIT(&g->tasks);
	RB_INIT(&g->tasks_by_pid);
	RB_INIT(&g->timers);
	TAILQ_INIT(&g->ended);

	g->epoll_fd = fdreg_epoll_create();
	if (g->epoll_fd < 0) {
		r = g->epoll_fd;
		goto fail;
	}
	g->wake_fd = fdreg_eventfd();
	if (g->wake_fd < 0) {
		r = g->wake_fd;
		goto fail_close_epoll;
	}
	ev.data.u64 = event_key(0, EVENT_WAKE);
	if (epoll_ctl(g->epoll_fd, EPOLL_CTL_ADD, g->wake_fd, &ev) < 0) {
		r = -errno;
		goto fail_close_wake;
	}
	r = channel_open(g);
	if (r < 0)
		goto fail_close_channel;
	return g;

fail_close_channel:
	fdreg_close(g->channel_rx);
	fdreg_close(g->channel_tx);
fail_close_wake:
	fdreg_close(g->wake_fd);
fail_close_epoll:
	fdreg_close(g->epoll_fd);
fail:
	pthread_cond_destroy(&g->changed);
	pthread_mutex_destroy(&g->lock);
	parentmem_free(g, sizeof *g);
	errno = -r;
	return NULL;
}

EXPORT errgroup *errgroup_new(void)
{
	int cancellation = cancellation_off();
	errgroup *g = group_new();

	cancellation_restore(cancellation);
	return g;
}

/* A child that has exited no longer runs, but a plain group reaps only
 * inside its calls: what is ready is reaped first, as try_go does (a
 * group with a supervisor thread has it reaped there).  Reaping closes
 * fds, hence cancellation off. */
EXPORT int errgroup_set_limit(errgroup *g, int n)
{
	int r = 0, cancellation;

	if (n == 0)
		return -EINVAL;
	if (group_is_foreign(g))
		return -ECHILD;
	cancellation = cancellation_off();
	pthread_mutex_lock(&g->lock);
	poll_ready(g);
	if (g->running + g->starting > 0)
		r = -EBUSY;
	else
		g->limit = n < 0 ? -1 : n;
	pthread_mutex_unlock(&g->lock);
	cancellation_restore(cancellation);
	return r;
}

/* Tasks already running, or whose start is under way, can fail while the
 * caller is busy: they need the supervisor now, not at the next go(). */
EXPORT int errgroup_set_cancel_on_error(errgroup *g, bool on)
{
	int r = 0, cancellation;

	if (group_is_foreign(g))
		return -ECHILD;
	cancellation = cancellation_off();
	pthread_mutex_lock(&g->lock);
	g->cancel_on_error = on;
	if (on && g->running + g->starting > 0)
		r = supervisor_ensure(g);
	pthread_mutex_unlock(&g->lock);
	cancellation_restore(cancellation);
	return r;
}

EXPORT int errgroup_set_grace_ms(errgroup *g, unsigned ms)
{
	if (group_is_foreign(g))
		return -ECHILD;
	pthread_mutex_lock(&g->lock);
	g->grace_ms = ms;
	pthread_mutex_unlock(&g->lock);
	return 0;
}

/* The lock guards the list; it is taken through a cast because reading
 * from a const group still has to wait for a writer. */
EXPORT size_t errgroup_error_count(const errgroup *g)
{
	errgroup *m = (errgroup *)g;
	size_t n;

	if (group_is_foreign(g))
		return 0;
	pthread_mutex_lock(&m->lock);
	n = g->error_count;
	pthread_mutex_unlock(&m->lock);
	return n;
}

EXPORT const struct errgroup_error *errgroup_error_at(const errgroup *g, size_t i)
{
	errgroup *m = (errgroup *)g;
	const struct errgroup_error *e = NULL;

	if (group_is_foreign(g))
		return NULL;
	pthread_mutex_lock(&m->lock);
	if (i < g->error_count)
		e = &g->errors[i]->error;
	pthread_mutex_unlock(&m->lock);
	return e;
}

/* Waits for a child we just sent SIGKILL; it cannot take long. */
static void reap_killed(struct task *t)
{
	siginfo_t si;
	int r;

	do {
		if (t->pidfd >= 0)
			r = waitid(P_PIDFD, (id_t)t->pidfd, &si, WEXITED);
		else
			r = waitid(P_PID, (id_t)t->pid, &si, WEXITED);
	} while (r < 0 && errno == EINTR);
}

static void group_free(errgroup *g)
{
	struct task *t, *next;

	/* Inherited through fork(): another thread of the parent may have
	 * been changing the trees, the error list or the queue at that
	 * moment, so none is walked; their memory is left to the process's
	 * end.  The fds were closed at fork (fdreg.c), and the lock may be
	 * held by a thread that does not exist here, and waited on by
	 * others: destroying it is undefined, and glibc's
	 * pthread_cond_destroy would wait for those waiters forever.  (Where
	 * the kernel wipes parentmem, the child's copy is zeroes anyway.) */
	if (group_is_foreign(g)) {
		parentmem_free(g, sizeof *g);
		return;
	}
	supervisor_stop(g);
	RB_FOREACH_SAFE(t, task_tree, &g->tasks, next) {
		RB_REMOVE(task_tree, &g->tasks, t);
		RB_REMOVE(pid_tree, &g->tasks_by_pid, t);
		task_signal(t, SIGKILL);
		reap_killed(t);
		task_release(g, t);
	}
	while (g->task_chunks) {
		struct task_chunk *c = g->task_chunks;

		g->task_chunks = c->next;
		parentmem_free(c, sizeof *c);
	}
	while (g->spare_ends) {
		struct task_end *e = g->spare_ends;

		g->spare_ends = e->next_spare;
		free(e);
	}
	fdreg_close(g->channel_rx);
	fdreg_close(g->channel_tx);
	fdreg_close(g->wake_fd);
	fdreg_close(g->epoll_fd);
	fdreg_close(g->ended_fd);
	ended_free(g);
	for (size_t i = 0; i < g->error_count; i++) {
		struct task_end *e = g->errors[i];

		if (e->error.message != e->description)
			free((char *)e->error.message);
		free(e);
	}
	free(g->errors);
	pthread_cond_destroy(&g->changed);
	pthread_mutex_destroy(&g->lock);
	parentmem_free(g, sizeof *g);
}

EXPORT void errgroup_free(errgroup *g)
{
	int cancellation;

	if (!g)
		return;
	cancellation = cancellation_off();
	group_free(g);
	cancellation_restore(cancellation);
}
