/*
 * internal.h - the library's private declarations.
 *
 * The big picture.  A group (struct errgroup) owns one epoll instance and
 * one SOCK_SEQPACKET socketpair, its channel: every task sends its frames
 * (frame.c) on the shared end, and the kernel stamps each with the
 * sender's pid, which is how the parent tells whose frame it is
 * (channel.c).  Each running task owns a pidfd, in the epoll set one-shot
 * with the task's index as key, and the write end of a pipe, its lifeline,
 * which the parent never writes to: when the parent process dies, the pipe
 * loses its writer and the kernel sends SIGKILL to the task's process group
 * (child.c).  The child runs the task only after the parent, holding its
 * pidfd, sends it SIGNAL_GATE (start.c).
 *
 * Whoever waits reaps: a thread blocked in errgroup_go() at the limit or in
 * errgroup_wait() takes the "poller" role (poll.c) and handles the group's
 * events itself, so a plain group costs no thread and no hand-off.  When
 * something must happen while no caller waits (cancel-on-error, the SIGKILL
 * after a grace period), the group starts a supervisor thread
 * (supervisor.c), which then keeps the poller role for good.
 *
 * Memory.  The group and its tasks live in parentmem (parentmem.c), which
 * a forked child does not share, so the parent's bookkeeping after each
 * fork costs no copy-on-write fault; what the caller is handed (errors,
 * their messages, the ended queue) is ordinary heap memory, which a later
 * task may read.
 *
 * Locking.  g->lock protects every field of the group and of its tasks,
 * except those marked otherwise.  It is never held across fork() or a
 * blocking epoll_wait().  The fd registry (fdreg.c) has its own lock, taken
 * inside g->lock, never the other way round.
 */
#ifndef ERRGROUP_INTERNAL_H
#define ERRGROUP_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/single_threaded.h>
#include <sys/socket.h>
#include <bsd/sys/queue.h>
#include <bsd/sys/tree.h>

#include "errgroup.h"

#define EXPORT __attribute__((visibility("default")))

/* Code that runs in a command's child, which shares the parent's memory
 * until it execs (command.c): a sanitizer's instrumentation there would
 * write the parent's books. */
#define CHILD_SHARING_MEMORY __attribute__((no_sanitize("address", "thread", "undefined")))

/* Code a forked child runs before its task, kept side by side: the first
 * instruction a child runs in each 64 KiB of code is a page fault
 * (parentmem.c says what one costs).  GNU ld places the .text.hot
 * sections of all objects together. */
#define CHILD_CODE __attribute__((section(".text.hot.errgroup_child")))

/*
 * The library's calls are not cancellation points.  A thread that
 * pthread_cancel() stopped inside one would unwind with a group's lock
 * held (pthread_cond_wait takes it back first), the poller role taken or
 * the fd registry locked, and every later call on the group, or every
 * fork, would wait forever.  So each call that can reach a cancellation
 * point (a wait, a close, a write) runs with cancellation disabled; a
 * request that came meanwhile acts at the caller's next cancellation
 * point after the call returns.
 */
static inline int cancellation_off(void)
{
	int old;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	return old;
}

static inline void cancellation_restore(int old)
{
	pthread_setcancelstate(old, NULL);
}

/*
 * The same for the go() family, which forks.  The state is a word of the
 * thread's descriptor, whose page every fork write-protects: the first
 * write to it after a fork is a fault (docs/reliability.md, M3).  In a
 * host with threads, glibc writes that word in every cancellable system
 * call (the close after the fork among them), so disabling costs nothing
 * more there.  In a host with one thread glibc writes it in none, and no
 * other thread can cancel this one.  Returns -1 when there is nothing to
 * restore.  The child of the fork copies the thread's state: the task gets
 * the caller's back (child_run), and a request still pending at the fork
 * would reach it, end its first thread, and a process whose only thread
 * is canceled exits 0: a failing task counted a success.  So a request
 * already pending acts first, here, before the call takes anything (a
 * read of the word, no write), and start.c lets one that came during the
 * wait for room act too.  Not only in a host with threads:
 * pthread_cancel of oneself clears __libc_single_threaded.
 */
static inline int go_cancellation_off(void)
{
	pthread_testcancel();
	if (__libc_single_threaded)
		return -1;
	return cancellation_off();
}

static inline void go_cancellation_restore(int old)
{
	if (old >= 0)
		cancellation_restore(old);
}

/* How a task ended, as the group keeps it: one for each failure, and
 * one for each end while errgroup_fd's queue exists.  Taken from a stock
 * that start_task fills (g->spare_ends), so that recording an end never
 * allocates. */
struct task_end {
	struct errgroup_error error;   /* set when it failed */
	struct errgroup_exit exit;
	bool failed;                   /* then it is in g->errors, which owns it */
	TAILQ_ENTRY(task_end) queued;  /* in g->ended until errgroup_reap takes it */
	struct task_end *next_spare;   /* in g->spare_ends, until used */
	char description[128];         /* error.message points here, or to the
	                                  task's own message (then allocated) */
};
TAILQ_HEAD(end_queue, task_end);

/* A running task: started, not yet reaped. */
struct task {
	RB_ENTRY(task) by_index;
	int index;
	pid_t pid;
	RB_ENTRY(task) by_pid;
	int pidfd;                  /* -1 when the kernel offers no pidfds */
	int lifeline;               /* write end of the child's lifeline pipe */
	bool at_gate;               /* it waits for SIGNAL_GATE to run */
	int cancel_state;           /* the caller's, for the task; -1: untouched */
	bool signaled;              /* the group sent it SIGTERM or SIGKILL */
	bool timed_out;             /*   because it ran past its time */
	bool unreapable;            /* dead, but its tracer must see it first, or
	                               its status is not yet recorded (poll.c) */
	int exit_status_asked;      /*   times asked for that status (reap.c) */
	RB_ENTRY(task) by_timer;
	uint64_t timer_ns;          /* when its timer fires (timer.c); 0: none */
	bool returned;              /* it sent a RETURNED frame: */
	int returned_code;          /*   fn's return value */
	char *message;              /* the last message it sent, or NULL */
	struct task *next_free;     /* in g->free_tasks, while not in use */
};

/* Tasks are carved from chunks of parentmem, kept until errgroup_free. */
#define TASKS_PER_CHUNK 64
struct task_chunk {
	struct task_chunk *next;
	struct task tasks[TASKS_PER_CHUNK];
};

RB_HEAD(task_tree, task);
int task_compare(const struct task *a, const struct task *b);
RB_PROTOTYPE(task_tree, task, by_index, task_compare)
RB_HEAD(pid_tree, task);
int task_compare_pid(const struct task *a, const struct task *b);
RB_PROTOTYPE(pid_tree, task, by_pid, task_compare_pid)
RB_HEAD(timer_tree, task);
int task_compare_timer(const struct task *a, const struct task *b);
RB_PROTOTYPE(timer_tree, task, by_timer, task_compare_timer)

struct errgroup {
	bool live;                  /* true; a forked child reads false (parentmem) */
	pthread_mutex_t lock;
	pthread_cond_t changed;     /* broadcast when a task ends, the poller role
	                               frees, or the group is canceled */
	pid_t owner;                /* the process that created the group */
	int epoll_fd;
	int wake_fd;                /* eventfd: pulls the poller out of epoll_wait */
	int channel_rx;             /* the group's end of the channel (SO_PASSCRED) */
	int channel_tx;             /* the tasks' end; children keep it */
	dev_t channel_dev;          /* channel_tx's socket, for its tasks */
	ino_t channel_ino;
	size_t channel_capacity;    /* bytes the channel can hold (SO_SNDBUF) */

	int limit;                  /* < 0: none */
	bool cancel_on_error;
	unsigned grace_ms;

	int next_index;
	int starting;               /* go() calls between reserving a slot and
	                               inserting their task (fork in progress) */
	int running;                /* tasks in the trees */
	struct task_tree tasks;
	struct pid_tree tasks_by_pid;

	unsigned timeout_ms;        /* per task; 0: none */
	uint64_t deadline_ns;       /* CLOCK_MONOTONIC; 0: none */
	struct timer_tree timers;   /* tasks with a timer, soonest first */

	bool canceled;
	bool expired;               /* the deadline passed */
	int closed_by;              /* -ECANCELED or -ETIMEDOUT, whichever of
	                               the two came first: both are final, and
	                               errgroup_go returns it from then on */
	uint64_t kill_at_ns;        /* when stopped tasks get SIGKILL; 0: not pending */
	uint64_t swept_ns;          /* the last waitid sweep (poll.c) */
	int unreapable;             /* tasks marked so, retried by the sweep */

	struct task_end **errors;   /* each allocated alone: pointers stay
	                               valid; capacity covers every running
	                               task (start.c) */
	size_t error_count, error_capacity;
	struct task_end *spare_ends;   /* at least one per running task */
	size_t spare_count;
	struct task *free_tasks;
	struct task_chunk *task_chunks;

	int ended_fd;               /* errgroup_fd's eventfd; -1 until asked */
	struct end_queue ended;     /* for errgroup_reap, while ended_fd >= 0 */

	bool polling;               /* a thread holds the poller role */
	bool has_supervisor;        /* the supervisor thread exists (and polls) */
	bool stopping;              /* errgroup_free asks the supervisor to leave */
	pthread_t supervisor;
};

/* epoll keys: the task's index and which fd fired (MESSAGE and WAKE are
 * the group's). */
enum event_kind { EVENT_EXIT = 0, EVENT_MESSAGE = 1, EVENT_WAKE = 2 };
uint64_t event_key(int index, enum event_kind kind);

/* group.c */
bool group_is_foreign(const errgroup *g);
struct task *task_find(errgroup *g, int index);
struct task *task_find_pid(errgroup *g, pid_t pid);
struct task *task_alloc(errgroup *g);
void task_release(errgroup *g, struct task *t);

/* The signal that opens a child's start gate (start.c, child.c). */
#define SIGNAL_GATE SIGRTMIN

/* child.c: runs in the child after fork; never returns. */
struct fdreg_snapshot;
/* In a task, the fds it keeps (-1 outside a task). */
struct task_fds {
	int channel;                /* the group channel's shared end */
	int lifeline;               /* the read end of its lifeline */
	dev_t channel_dev;          /* the channel's socket, to know it by once */
	ino_t channel_ino;          /* the task may have closed the number */
};
_Noreturn void child_run(const struct fdreg_snapshot *inherited, const struct task_fds *kept,
			 int gate_signal, pid_t parent, int cancel_state, errgroup_task *fn,
			 void *arg);
struct task_fds task_kept_fds(void);
/* In the child of any fork: closes the task's fds, if it is a task's
 * child and they are still the task's, and forgets them. */
void task_fds_leave(void);

/* flush.c: stdio output that would otherwise be lost or written twice. */
void flush_pending_output(void);

/* cleanstart.c */
void clean_start(int last_signal);
void drop_pending_signals(uint64_t set);
bool stat_signals_set(const char *text, uint64_t *ret);

/* rawsyscall.c: the result or -errno, without libc (see there). */
long raw_syscall(long number, long a, long b, long c, long d, long e, long f);

/* lifeline.c: in a new child, before the task runs; false if the parent
 * process is already gone. */
bool lifeline_arm(int lifeline);

/* channel.c: read what the tasks sent (bounded: see channel.c). */
int channel_open(errgroup *g);
void channel_drain(errgroup *g);

/* reap.c */
bool reap_task(errgroup *g, struct task *t);

/* poll.c */
uint64_t now_ns(void);
typedef bool poll_done_fn(errgroup *g, void *arg);
void poll_until(errgroup *g, poll_done_fn *done, void *arg, bool as_supervisor);
void poll_ready(errgroup *g);
void wake_poller(errgroup *g);

/* cancel.c */
void group_cancel_locked(errgroup *g);
void group_expire_locked(errgroup *g);
void task_stop(errgroup *g, struct task *t);
void cancel_escalate(errgroup *g);
void task_signal(struct task *t, int sig);
bool task_has_exited(struct task *t);
void task_kill_leftovers(struct task *t);

/* timer.c: per-task timeouts and the group's deadline. */
void timer_start(errgroup *g, struct task *t);
void timer_stop(errgroup *g, struct task *t);
uint64_t timer_next_ns(errgroup *g);
void timer_run(errgroup *g);
bool group_past_deadline(errgroup *g);

/* ended.c: the queue behind errgroup_fd and errgroup_reap. */
void ended_push(errgroup *g, struct task_end *e);
void ended_free(errgroup *g);

/* start.c: what both kinds of task share.  A spawn_fn starts the child
 * for what (a function call, a command), fills in t->pid, t->pidfd,
 * t->lifeline, t->at_gate and t->message, and returns 0 or a negative
 * errno with nothing left behind.  It runs without the group lock. */
typedef int spawn_fn(errgroup *g, const void *what, struct task *t);
int start_task(errgroup *g, spawn_fn *spawn, const void *what, bool block);
void abort_child(pid_t pid, int pidfd);

/* command.c */
int spawn_command(errgroup *g, const void *cmd, struct task *t);

/* supervisor.c */
int supervisor_ensure(errgroup *g);
void supervisor_stop(errgroup *g);

/* frame.c: the wire format of a task's messages (see frame.c). */
enum frame_type { FRAME_MESSAGE = 1, FRAME_RETURNED = 2 };
struct frame {
	enum frame_type type;
	int code;
	const char *text;           /* points into the decoded buffer; NUL-free */
	size_t text_len;
};
#define FRAME_HEADER_SIZE 16
#define FRAME_TRUNCATION_MARKER_MAX 64
#define FRAME_MAX (FRAME_HEADER_SIZE + ERRGROUP_MESSAGE_MAX + FRAME_TRUNCATION_MARKER_MAX)
size_t frame_encode_header(unsigned char *buf, enum frame_type type, int code, size_t text_len);
int frame_decode(const unsigned char *buf, size_t len, struct frame *ret);
size_t frame_message_length(char *text, int printed, int err);

/* channel.c: Linux 6.16's option, where the socket options take the
 * generic numbers; the C library's headers may not have it yet. */
#if !defined(SO_PASSRIGHTS) && !defined(__alpha__) && !defined(__hppa__) && \
	!defined(__mips__) && !defined(__sparc__)
#define SO_PASSRIGHTS 83
#endif

/* fdreg.c: every fd the library creates, so that children close them all. */
#define LOW_FDS 1024
struct fdreg_snapshot {        /* which fds were the library's at a fork */
	uint64_t low[LOW_FDS / 64];
	const uint64_t *high;       /* fds from LOW_FDS up: the registry's array,
	                               as the child's copy of the heap holds it */
	size_t high_words;
	pthread_t thread;           /* the thread that forks */
	bool taken;                 /* filled in by the prepare handler */
	struct fdreg_snapshot *next;
};
int fdreg_socketpair(int ret[2]);
int fdreg_pipe(int ret[2]);
int fdreg_epoll_create(void);
int fdreg_eventfd(void);
int fdreg_pidfd_open(pid_t pid);
void fdreg_close(int fd);
int fdreg_snapshot_at_fork(struct fdreg_snapshot *s);
void fdreg_snapshot_done(struct fdreg_snapshot *s);
void fdreg_close_snapshot(const struct fdreg_snapshot *s, int keep_a, int keep_b);
void fdreg_lock(void);
void fdreg_unlock(void);
int fdreg_adopt_locked(int fd);
bool fdreg_holds_locked(int fd);

/* parentmem.c: memory a forked child does not share. */
void *parentmem_alloc(size_t size);
void parentmem_free(void *p, size_t size);
bool parentmem_wipes(void);

/* pidfd.c */
int pidfd_supported(void);
int pidfd_signal_group(int pidfd, int sig);
int pidfd_exit_status(int pidfd, int *ret_wstatus);

#endif
