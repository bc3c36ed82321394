/*
 * fdreg.c - the registry of every fd the library holds, in all its groups.
 *
 * A forked child inherits every fd of its parent, O_CLOEXEC or not, and a
 * function task never execs.  If a task kept the library's fds, it could
 * read or signal its siblings through their pidfds and channels, and hold
 * the parent's end of another task's channel open, which would defeat that
 * task's orphan lifeline (child.c).  So the library records each fd it
 * creates here, and an atfork child handler closes all of them in every
 * child that glibc's fork() makes: ours (except the one channel end the new
 * task needs) and the host's own.
 *
 * Creation and registration happen under one lock that the atfork prepare
 * handler also takes, so a fork in another thread sees each fd either
 * created and registered or neither.  Closing happens under the same lock,
 * so a number is never unregistered while still open (a child would keep
 * it) nor left registered once free (a child would close a host fd that
 * took the number).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#define BITS_PER_WORD 64
#define STATIC_FDS 1024

/*
 * Everything the registry writes on a task's start, in one small struct:
 * fork() write-protects every page the parent and the child share, and the
 * first write to each such page, on either side, is a copy-on-write fault
 * (about 2 us here).  The lock is written on both sides of every fork
 * anyway; the count and the bits of the first STATIC_FDS fds share its
 * page (256-byte alignment keeps the struct inside one page), and only
 * fds above that, which a host with hundreds of live tasks has, use a
 * second bitmap on the heap.
 */
static struct {
	pthread_mutex_t lock;
	size_t count;                   /* registered fds; more is freed at 0 */
	uint64_t *more;                 /* bit fd - STATIC_FDS: the library holds fd */
	size_t more_words;
	uint64_t bits[STATIC_FDS / BITS_PER_WORD];   /* bit fd: likewise */
} registry __attribute__((aligned(256))) = { .lock = PTHREAD_MUTEX_INITIALIZER };

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* The fds that the thread calling fork() wants the new task to keep (the
 * channel's shared end and the lifeline's read end); -1 otherwise.
 * Thread-local, so the child (a copy of that thread) sees the values its
 * parent thread set.  (In the registry's page it would save the parent a
 * write to the TLS page, but errno is written there anyway, and our fork
 * would have to hold the lock across fork(): a recursive lock the child
 * cannot unlock, and must make anew, which TSan takes for a double lock.) */
static __thread int fork_keep[2] = { -1, -1 };

/* The word that holds fd's bit, or NULL if there is none yet. */
static uint64_t *word_of(int fd)
{
	size_t w;

	if (fd < STATIC_FDS)
		return &registry.bits[fd / BITS_PER_WORD];
	w = (size_t)(fd - STATIC_FDS) / BITS_PER_WORD;
	return w < registry.more_words ? &registry.more[w] : NULL;
}

static void prepare(void)
{
	pthread_mutex_lock(&registry.lock);
}

static void parent(void)
{
	pthread_mutex_unlock(&registry.lock);
}

/* Closes fds first..last, all of them open and registered.  In a child,
 * through syscall(): see cleanstart.c. */
static void close_run(int first, int last)
{
	if (syscall(SYS_close_range, (unsigned)first, (unsigned)last, 0) == 0)
		return;
	for (int fd = first; fd <= last; fd++)   /* ENOSYS: before Linux 5.9 */
		close(fd);
}

/* Closes the registered fds of n bitmap words (base: the fd of the first
 * bit), but for the two to keep, in runs of consecutive fds: *first and
 * *last hold the run still open, which a gap ends.  Leaves the kept fds'
 * bits, and writes a word only if it changes: each page written in the
 * child is a copy-on-write fault. */
static void close_words(uint64_t *words, size_t n, int base, int *first, int *last)
{
	for (size_t w = 0; w < n; w++) {
		uint64_t bits = words[w], kept = 0;

		while (bits) {
			int bit = __builtin_ctzll(bits);
			int fd = base + (int)(w * BITS_PER_WORD) + bit;

			bits &= bits - 1;
			if (fd == fork_keep[0] || fd == fork_keep[1]) {
				kept |= UINT64_C(1) << bit;
				continue;
			}
			if (fd != *last + 1) {
				if (*first >= 0)
					close_run(*first, *last);
				*first = fd;
			}
			*last = fd;
			registry.count--;
		}
		if (words[w] != kept)
			words[w] = kept;
	}
}

/*
 * Runs in the child, which has one thread: no lock can be contended, and
 * the one we hold is ours (taken in prepare).  A task's fds are mostly
 * consecutive (the library's own, then a pidfd and a lifeline per running
 * task), so it closes them in runs, one close_range each: with thousands
 * of tasks running, a close() per fd made every start cost O(tasks)
 * system calls.  The registry is left holding the two kept fds, which is
 * right for a task that forks or makes groups of its own.
 */
static void child(void)
{
	int first = -1, last = -2;

	close_words(registry.bits, STATIC_FDS / BITS_PER_WORD, 0, &first, &last);
	close_words(registry.more, registry.more_words, STATIC_FDS, &first, &last);
	if (first >= 0)
		close_run(first, last);
	pthread_mutex_unlock(&registry.lock);
}

static void install_atfork(void)
{
	pthread_atfork(prepare, parent, child);
}

/* Called with the lock held; fd >= 0. */
static int mark(int fd)
{
	uint64_t *word = word_of(fd);

	if (!word) {
		size_t w = (size_t)(fd - STATIC_FDS) / BITS_PER_WORD;
		size_t words = registry.more_words ? registry.more_words : 16;
		uint64_t *grown;

		while (words <= w)
			words *= 2;
		grown = realloc(registry.more, words * sizeof *grown);
		if (!grown)
			return -ENOMEM;
		for (size_t i = registry.more_words; i < words; i++)
			grown[i] = 0;
		registry.more = grown;
		registry.more_words = words;
		word = &grown[w];
	}
	*word |= UINT64_C(1) << (fd % BITS_PER_WORD);
	registry.count++;
	return 0;
}

static void unmark(int fd)
{
	uint64_t *word = word_of(fd);
	uint64_t bit = UINT64_C(1) << (fd % BITS_PER_WORD);

	if (!word || !(*word & bit))
		return;
	*word &= ~bit;
	if (--registry.count == 0 && registry.more) {
		free(registry.more);
		registry.more = NULL;
		registry.more_words = 0;
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
static int adopt(int fd)
{
	int r;

	fd = above_stdio(fd);
	if (fd < 0)
		return -errno;
	r = mark(fd);
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

static void lock(void)
{
	pthread_once(&atfork_once, install_atfork);
	pthread_mutex_lock(&registry.lock);
}

/* Registers both fds of a pair just created (r = the creating call's
 * result), or closes them and returns the error.  Lock held. */
static int adopt_pair(int r, int sv[2], int ret[2])
{
	if (r < 0)
		return -errno;
	sv[0] = above_stdio(sv[0]);
	if (sv[0] < 0) {
		r = -errno;
		close(sv[1]);
		return r;
	}
	sv[1] = above_stdio(sv[1]);
	if (sv[1] < 0) {
		r = -errno;
		close(sv[0]);
		return r;
	}
	r = mark(sv[0]);
	if (r == 0)
		r = mark(sv[1]);
	if (r < 0) {
		unmark(sv[0]);
		close(sv[0]);
		close(sv[1]);
		return r;
	}
	ret[0] = sv[0];
	ret[1] = sv[1];
	return 0;
}

int fdreg_socketpair(int ret[2])
{
	int sv[2], r;

	lock();
	r = adopt_pair(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), sv, ret);
	pthread_mutex_unlock(&registry.lock);
	return r;
}

int fdreg_pipe(int ret[2])
{
	int p[2], r;

	lock();
	r = adopt_pair(pipe2(p, O_CLOEXEC), p, ret);
	pthread_mutex_unlock(&registry.lock);
	return r;
}

int fdreg_epoll_create(void)
{
	int fd;

	lock();
	fd = adopt(epoll_create1(EPOLL_CLOEXEC));
	pthread_mutex_unlock(&registry.lock);
	return fd;
}

int fdreg_eventfd(void)
{
	int fd;

	lock();
	fd = adopt(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	pthread_mutex_unlock(&registry.lock);
	return fd;
}

int fdreg_pidfd_open(pid_t pid)
{
	int fd;

	lock();
	fd = adopt(pidfd_open(pid, 0));   /* pidfds are always O_CLOEXEC */
	pthread_mutex_unlock(&registry.lock);
	return fd;
}

void fdreg_close(int fd)
{
	if (fd < 0)
		return;
	lock();
	unmark(fd);
	close(fd);
	pthread_mutex_unlock(&registry.lock);
}

void fdreg_set_fork_keep(int a, int b)
{
	fork_keep[0] = a;
	fork_keep[1] = b;
}

/* For a child started by clone(), which runs no atfork handler: the pidfd
 * that clone returns must be registered before any other thread can fork,
 * so command.c clones with the registry locked and adopts the pidfd
 * before it unlocks. */
void fdreg_lock(void)
{
	lock();
}

void fdreg_unlock(void)
{
	pthread_mutex_unlock(&registry.lock);
}

/* Registers fd, or closes it and returns the error; fdreg_lock held. */
int fdreg_adopt_locked(int fd)
{
	return adopt(fd);
}
