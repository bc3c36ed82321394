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
#include <unistd.h>

#include "internal.h"

#define BITS_PER_WORD 64

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t *registered;            /* bit fd set: the library holds fd */
static size_t registered_words;
static size_t registered_count;         /* the bitmap is freed when it drops to 0 */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* The fds that the thread calling fork() wants the new task to keep (the
 * channel's shared end and the lifeline's read end); -1 otherwise.
 * Thread-local, so the child (a copy of that thread) sees the values its
 * parent thread set. */
static __thread int fork_keep[2] = { -1, -1 };

static void prepare(void)
{
	pthread_mutex_lock(&registry_lock);
}

static void parent(void)
{
	pthread_mutex_unlock(&registry_lock);
}

/* Runs in the child, which has one thread: no lock can be contended, and
 * the one we hold is ours (taken in prepare). */
static void child(void)
{
	for (size_t w = 0; w < registered_words; w++) {
		uint64_t bits = registered[w];

		while (bits) {
			int bit = __builtin_ctzll(bits);
			int fd = (int)(w * BITS_PER_WORD) + bit;

			bits &= bits - 1;
			if (fd == fork_keep[0] || fd == fork_keep[1])
				continue;
			close(fd);
			registered[w] &= ~(UINT64_C(1) << bit);
			registered_count--;
		}
	}
	pthread_mutex_unlock(&registry_lock);
}

static void install_atfork(void)
{
	pthread_atfork(prepare, parent, child);
}

/* Called with registry_lock held; fd >= 0. */
static int mark(int fd)
{
	size_t w = (size_t)fd / BITS_PER_WORD;

	if (w >= registered_words) {
		size_t words = registered_words ? registered_words : 16;
		uint64_t *grown;

		while (words <= w)
			words *= 2;
		grown = realloc(registered, words * sizeof *grown);
		if (!grown)
			return -ENOMEM;
		for (size_t i = registered_words; i < words; i++)
			grown[i] = 0;
		registered = grown;
		registered_words = words;
	}
	registered[w] |= UINT64_C(1) << (fd % BITS_PER_WORD);
	registered_count++;
	return 0;
}

static void unmark(int fd)
{
	size_t w = (size_t)fd / BITS_PER_WORD;
	uint64_t bit = UINT64_C(1) << (fd % BITS_PER_WORD);

	if (w >= registered_words || !(registered[w] & bit))
		return;
	registered[w] &= ~bit;
	if (--registered_count == 0) {
		free(registered);
		registered = NULL;
		registered_words = 0;
	}
}

/* Registers fd (or closes it and returns the error); lock held. */
static int adopt(int fd)
{
	int r;

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
	pthread_mutex_lock(&registry_lock);
}

/* Registers both fds of a pair just created (r = the creating call's
 * result), or closes them and returns the error.  Lock held. */
static int adopt_pair(int r, int sv[2], int ret[2])
{
	if (r < 0)
		return -errno;
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
	pthread_mutex_unlock(&registry_lock);
	return r;
}

int fdreg_pipe(int ret[2])
{
	int p[2], r;

	lock();
	r = adopt_pair(pipe2(p, O_CLOEXEC), p, ret);
	pthread_mutex_unlock(&registry_lock);
	return r;
}

int fdreg_epoll_create(void)
{
	int fd;

	lock();
	fd = adopt(epoll_create1(EPOLL_CLOEXEC));
	pthread_mutex_unlock(&registry_lock);
	return fd;
}

int fdreg_eventfd(void)
{
	int fd;

	lock();
	fd = adopt(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	pthread_mutex_unlock(&registry_lock);
	return fd;
}

int fdreg_pidfd_open(pid_t pid)
{
	int fd;

	lock();
	fd = adopt(pidfd_open(pid, 0));   /* pidfds are always O_CLOEXEC */
	pthread_mutex_unlock(&registry_lock);
	return fd;
}

void fdreg_close(int fd)
{
	if (fd < 0)
		return;
	lock();
	unmark(fd);
	close(fd);
	pthread_mutex_unlock(&registry_lock);
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
	pthread_mutex_unlock(&registry_lock);
}

/* Registers fd, or closes it and returns the error; fdreg_lock held. */
int fdreg_adopt_locked(int fd)
{
	return adopt(fd);
}
