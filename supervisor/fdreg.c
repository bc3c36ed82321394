/*
 * fdreg.c - the registry of every fd the library holds, in all its groups.
 *
 * A forked child inherits every fd of its parent, O_CLOEXEC or not, and a
 * function task never execs.  If a task kept the library's fds, it could
 * read or signal its siblings through their pidfds and channels, and hold
 * the write end of another task's lifeline open, which would defeat that
 * task's orphan protection (lifeline.c).  So the library records each fd
 * it creates here, and every child that glibc's fork() makes closes all of
 * them: ours (but for the two fds the new task needs) and the host's own.
 *
 * Creation and registration happen under one lock that the atfork prepare
 * handler also takes, and glibc holds it from that handler until the fork
 * is over, so a fork in another thread sees each fd either created and
 * registered or neither.  Closing happens under the same lock, so a number
 * is never unregistered while still open (a child would keep it) nor left
 * registered once free (a child would close a host fd that took the
 * number).
 *
 * Where the books live.  The lock and the bits of fds below LOW_FDS are in
 * parentmem (parentmem.c): a pidfd and a lifeline are registered and
 * closed for every task, right after a fork, and on ordinary memory each
 * of those writes was a copy-on-write fault.  A child sees zeroes there,
 * so the prepare handler copies the bits, under the lock, for the child:
 *   - the library's own fork (start.c) asks for them in a struct
 *     fdreg_snapshot on its own stack, which the parent writes anyway, so
 *     the copy costs no fault; child_run() closes what it lists;
 *   - any other fork gets them in a static snapshot, which the atfork
 *     child handler closes.
 * Bits of fds from LOW_FDS up (a host with hundreds of live tasks) are in
 * an ordinary heap array, which the child sees as it was at the fork: the
 * snapshot only points at it.  A child starts with a registry of its own,
 * made the first time it uses the library or forks.  The two fds a task
 * keeps are not in it: the task may close them and reuse their numbers,
 * so each child of a task closes them only if they are still the task's
 * (child.c, task_fds_leave).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#define BITS_PER_WORD 64

struct registry {
	pthread_mutex_t lock;
	bool live;                      /* false in a child: its copy is zeroes */
	pthread_t fork_holder;          /* the thread whose fork holds the lock;
	                                   atomic: parent() reads it unlocked */
	struct fdreg_snapshot *requests;   /* forks of the library's own, under way */
	size_t count;                   /* registered fds; high is freed at 0 */
	uint64_t *high;                 /* bit fd - LOW_FDS: the library holds fd */
	size_t high_words;
	uint64_t low[LOW_FDS / BITS_PER_WORD];   /* bit fd: likewise */
};

/* Set once per process (again in a child, whose copy points at zeroes). */
static struct registry *registry_now;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* For forks that are not the library's own; written by the prepare
 * handler under the lock, read by the child handler. */
static struct fdreg_snapshot inherited;
static bool inherited_valid;

static void prepare(void);
static void parent(void);
CHILD_CODE
static void child(void);

static void install_atfork(void)
{
	pthread_atfork(prepare, parent, child);
}

/* The process's registry, made on first use; NULL if out of memory. */
static struct registry *registry(void)
{
	struct registry *r = __atomic_load_n(&registry_now, __ATOMIC_ACQUIRE), *fresh;

	if (r && r->live)
		return r;
	fresh = parentmem_alloc(sizeof *fresh);
	if (!fresh)
		return NULL;
	pthread_mutex_init(&fresh->lock, NULL);
	fresh->live = true;
	/* A stale pointer (a child's) or none is replaced once; a thread
	 * that loses the race uses the winner's.  A child's stale page is
	 * left mapped: another of its threads may be reading it. */
	if (!__atomic_compare_exchange_n(&registry_now, &r, fresh, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		pthread_mutex_destroy(&fresh->lock);
		parentmem_free(fresh, sizeof *fresh);
		return r;
	}
	return fresh;
}

/* The handlers are in place before any fd is registered, whichever
 * thread registers it first. */
static struct registry *lock(void)
{
	struct registry *r;

	pthread_once(&atfork_once, install_atfork);
	r = registry();
	if (r)
		pthread_mutex_lock(&r->lock);
	return r;
}

static void unlock(struct registry *r)
{
	pthread_mutex_unlock(&r->lock);
}

/* The registry as the parent and child handlers find it: the one prepare
 * locked, unless it could not make one. */
static struct registry *at_fork(void)
{
	struct registry *r = __atomic_load_n(&registry_now, __ATOMIC_ACQUIRE);

	return r && r->live ? r : NULL;
}

static void take_snapshot(struct registry *r, struct fdreg_snapshot *s)
{
	memcpy(s->low, r->low, sizeof s->low);
	s->high = r->high;
	s->high_words = r->high_words;
}

/*
 * Makes the registry if there is none yet (a child's first fork), so that
 * every fork, from its prepare to its parent handler, holds the lock that
 * every registration takes: a thread making the process's first registry
 * while another forks would otherwise register fds the fork does not see.
 */
static void prepare(void)
{
	struct registry *r = registry();
	struct fdreg_snapshot **p, *own = NULL;
	pthread_t self = pthread_self();

	if (!r)
		return;   /* out of memory: nothing registered to protect */
	pthread_mutex_lock(&r->lock);
	__atomic_store_n(&r->fork_holder, self, __ATOMIC_RELAXED);
	for (p = &r->requests; *p; p = &(*p)->next) {
		if (pthread_equal((*p)->thread, self)) {
			own = *p;
			*p = own->next;
			break;
		}
	}
	if (own) {
		take_snapshot(r, own);
		own->taken = true;
		return;
	}
	take_snapshot(r, &inherited);
	inherited_valid = true;
}

/* Only the thread whose prepare took the lock releases it: if prepare
 * could not make a registry, another thread may have made one since. */
static void parent(void)
{
	struct registry *r = at_fork();

	if (!r || !pthread_equal(__atomic_load_n(&r->fork_holder, __ATOMIC_RELAXED),
				 pthread_self()))
		return;
	__atomic_store_n(&r->fork_holder, 0, __ATOMIC_RELAXED);
	/* Tested first: the library's own fork leaves it false, and a write
	 * here would be a copy-on-write fault for every task. */
	if (inherited_valid)
		inherited_valid = false;
	unlock(r);
}

/* Closes fds first..last, in a child: raw system calls (rawsyscall.c). */
CHILD_CODE
static void close_run(int first, int last)
{
	if (raw_syscall(SYS_close_range, first, last, 0, 0, 0, 0) == 0)
		return;
	for (int fd = first; fd <= last; fd++)   /* ENOSYS: before Linux 5.9 */
		raw_syscall(SYS_close, fd, 0, 0, 0, 0, 0);
}

/* Adds the fds of n bitmap words (base: the fd of the first bit) to the
 * runs of consecutive fds to close, but for keep_a and keep_b: *first and
 * *last hold the run still open, which a gap ends.  Reads only: each page
 * a child writes is a copy-on-write fault. */
CHILD_CODE
static void close_words(const uint64_t *words, size_t n, int base, int keep_a, int keep_b,
			int *first, int *last)
{
	for (size_t w = 0; w < n; w++) {
		uint64_t bits = words[w];

		while (bits) {
			int fd = base + (int)(w * BITS_PER_WORD) + __builtin_ctzll(bits);

			bits &= bits - 1;
			if (fd == keep_a || fd == keep_b)
				continue;
			if (fd != *last + 1) {
				if (*first >= 0)
					close_run(*first, *last);
				*first = fd;
			}
			*last = fd;
		}
	}
}

/*
 * In a child: closes every fd that s lists, but keep_a and keep_b (-1:
 * none).  A task's fds are mostly consecutive (the library's own, then a
 * pidfd and a lifeline per running task), so they are closed in runs, one
 * close_range each: with thousands of tasks running, a close() per fd made
 * every start cost O(tasks) system calls.
 */
CHILD_CODE
void fdreg_close_snapshot(const struct fdreg_snapshot *s, int keep_a, int keep_b)
{
	int first = -1, last = -2;

	close_words(s->low, LOW_FDS / BITS_PER_WORD, 0, keep_a, keep_b, &first, &last);
	close_words(s->high, s->high_words, LOW_FDS, keep_a, keep_b, &first, &last);
	if (first >= 0)
		close_run(first, last);
}

/*
 * In the child of any fork.  The library's own fork closes its fds in
 * child_run(), which knows which two to keep; any other closes them all
 * here.  Either way the child is not the task it was forked from, if any
 * (child.c, task_fds_leave).  The registry the child inherited is
 * zeroes, so the lock needs no release; where the kernel does not wipe
 * (parentmem.c), the child's copy is cleared by hand, lock and all.
 */
static void child(void)
{
	struct registry *r;

	task_fds_leave();
	if (inherited_valid) {
		fdreg_close_snapshot(&inherited, -1, -1);
		/* Or a fork of the library's own in this child would find
		 * it, and close what are by then the child's fds. */
		inherited_valid = false;
	}
	if (parentmem_wipes())
		return;
	r = at_fork();
	if (!r)
		return;
	r->live = false;
}

/* The library's own fork is about to happen in this thread: its prepare
 * handler will fill s (which must stay put until fork() returns) instead
 * of the static snapshot.  With every signal blocked, so that no handler
 * in this thread forks first and takes s.  Returns 0 or -ENOMEM. */
int fdreg_snapshot_at_fork(struct fdreg_snapshot *s)
{
	struct registry *r = lock();

	if (!r)
		return -ENOMEM;
	s->thread = pthread_self();
	s->taken = false;
	s->next = r->requests;
	r->requests = s;
	unlock(r);
	return 0;
}

/* After the fork: s must not stay listed, since it lives on the caller's
 * stack.  glibc runs the prepare handler before every fork, so s is taken
 * by now; this checks, because a request left behind would have the next
 * fork of this thread write into a dead stack frame. */
void fdreg_snapshot_done(struct fdreg_snapshot *s)
{
	struct registry *r;
	struct fdreg_snapshot **p;

	if (s->taken)
		return;
	r = lock();
	if (!r)
		return;
	for (p = &r->requests; *p; p = &(*p)->next) {
		if (*p == s) {
			*p = s->next;
			break;
		}
	}
	unlock(r);
}

/* The word that holds fd's bit, or NULL if there is none yet. */
static uint64_t *word_of(struct registry *r, int fd)
{
	size_t w;

	if (fd < LOW_FDS)
		return &r->low[fd / BITS_PER_WORD];
	w = (size_t)(fd - LOW_FDS) / BITS_PER_WORD;
	return w < r->high_words ? &r->high[w] : NULL;
}

/* Called with the lock held; fd >= 0. */
static int mark(struct registry *r, int fd)
{
	uint64_t *word = word_of(r, fd);

	if (!word) {
		size_t w = (size_t)(fd - LOW_FDS) / BITS_PER_WORD;
		size_t words = r->high_words ? r->high_words : 16;
		uint64_t *grown;

		while (words <= w)
			words *= 2;
		/* A child reading the old array through a snapshot reads its
		 * own copy of the heap: moving it here does not disturb it. */
		grown = realloc(r->high, words * sizeof *grown);
		if (!grown)
			return -ENOMEM;
		for (size_t i = r->high_words; i < words; i++)
			grown[i] = 0;
		r->high = grown;
		r->high_words = words;
		word = &grown[w];
	}
	*word |= UINT64_C(1) << (fd % BITS_PER_WORD);
	r->count++;
	return 0;
}

static void unmark(struct registry *r, int fd)
{
	uint64_t *word = word_of(r, fd);
	uint64_t bit = UINT64_C(1) << (fd % BITS_PER_WORD);

	if (!word || !(*word & bit))
		return;
	*word &= ~bit;
	if (--r->count == 0 && r->high) {
		free(r->high);
		r->high = NULL;
		r->high_words = 0;
	}
}

/*
 * Moves a new fd out of 0-2, or closes it and returns -1 with errno set.
 * A host that closed its stdin, stdout or stderr makes the kernel hand
 * those numbers to the library; a function task, which inherits the kept
 * channel and lifeline ends, would then printf into the channel, and a
 * host that later opens something "as stdout" would find it taken.
 */
static int above_stdio(int fd)
{
	int moved, saved;

	if (fd < 0 || fd > STDERR_FILENO)
		return fd;
	moved = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
	saved = errno;
	close(fd);
	errno = saved;
	return moved;
}

/* Registers fd (or closes it and returns the error); lock held. */
static int adopt(struct registry *r, int fd)
{
	int ret;

	fd = above_stdio(fd);
	if (fd < 0)
		return -errno;
	ret = mark(r, fd);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	return fd;
}

/* Registers both fds of a pair just created (ret = the creating call's
 * result), or closes them and returns the error.  Lock held. */
static int adopt_pair(struct registry *r, int ret, int sv[2], int out[2])
{
	if (ret < 0)
		return -errno;
	sv[0] = above_stdio(sv[0]);
	if (sv[0] < 0) {
		ret = -errno;
		close(sv[1]);
		return ret;
	}
	sv[1] = above_stdio(sv[1]);
	if (sv[1] < 0) {
		ret = -errno;
		close(sv[0]);
		return ret;
	}
	ret = mark(r, sv[0]);
	if (ret == 0)
		ret = mark(r, sv[1]);
	if (ret < 0) {
		unmark(r, sv[0]);
		close(sv[0]);
		close(sv[1]);
		return ret;
	}
	out[0] = sv[0];
	out[1] = sv[1];
	return 0;
}

int fdreg_socketpair(int out[2])
{
	struct registry *r = lock();
	int sv[2], ret;

	if (!r)
		return -ENOMEM;
	ret = adopt_pair(r, socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), sv, out);
	unlock(r);
	return ret;
}

int fdreg_pipe(int out[2])
{
	struct registry *r = lock();
	int p[2], ret;

	if (!r)
		return -ENOMEM;
	ret = adopt_pair(r, pipe2(p, O_CLOEXEC), p, out);
	unlock(r);
	return ret;
}

/* The single-fd creators: each makes its fd and registers it under the
 * lock.  kind: what to create. */
enum fd_kind { FD_EPOLL, FD_EVENTFD, FD_PIDFD };

static int create(enum fd_kind kind, pid_t pid)
{
	struct registry *r = lock();
	int fd;

	if (!r)
		return -ENOMEM;
	switch (kind) {
	case FD_EPOLL:
		fd = epoll_create1(EPOLL_CLOEXEC);
		break;
	case FD_EVENTFD:
		fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		break;
	default:
		fd = pidfd_open(pid, 0);   /* pidfds are always O_CLOEXEC */
		break;
	}
	fd = adopt(r, fd);
	unlock(r);
	return fd;
}

int fdreg_epoll_create(void)
{
	return create(FD_EPOLL, 0);
}

int fdreg_eventfd(void)
{
	return create(FD_EVENTFD, 0);
}

int fdreg_pidfd_open(pid_t pid)
{
	return create(FD_PIDFD, pid);
}

/* Closes a registered fd.  The registry exists: the fd was registered. */
void fdreg_close(int fd)
{
	struct registry *r;

	if (fd < 0)
		return;
	r = lock();
	if (r)
		unmark(r, fd);
	close(fd);
	if (r)
		unlock(r);
}

/* For a child started by clone(), which runs no atfork handler: the pidfd
 * that clone returns must be registered before any other thread can fork,
 * so command.c clones with the registry locked and adopts the pidfd
 * before it unlocks.  The caller has registered fds already, so the
 * registry exists. */
void fdreg_lock(void)
{
	pthread_mutex_lock(&registry_now->lock);
}

void fdreg_unlock(void)
{
	unlock(registry_now);
}

/* Whether fd is one of the library's; fdreg_lock held. */
bool fdreg_holds_locked(int fd)
{
	uint64_t *word = fd >= 0 ? word_of(registry_now, fd) : NULL;

	return word && (*word >> (fd % BITS_PER_WORD) & 1);
}

/* Registers fd, or closes it and returns the error; fdreg_lock held. */
int fdreg_adopt_locked(int fd)
{
	return adopt(registry_now, fd);
}
