/*
 * parentmem.c - memory that only the process that allocated it sees: the
 * group, its tasks and the fd registry's bitmap live here.
 *
 * fork() write-protects every private page the parent and the child share,
 * and the parent's first write to each of them afterwards is a fault: a
 * page copy while the child lives, a re-mapping after (2 us on a physical
 * machine, 20-28 us in the VMs measured in docs/benchmarks.md).  The
 * library writes its books right after every fork, so on ordinary heap
 * pages each task cost the parent one fault per page touched.  Pages
 * marked MADV_WIPEONFORK are not shared with the child at all: the kernel
 * leaves the parent's mapping writable and gives the child zeroes instead.
 *
 * The zeroes are also how a forked child knows that a group is not its
 * own (group.c): every field reads 0 there, however far the parent's
 * state had got.  Kernels before 4.14, and sandboxes that refuse the
 * advice, leave the memory shared as usual; parentmem_wipes() says which,
 * so that the callers can fall back on comparing pids.
 * ERRGROUP_DISABLE_WIPEONFORK=1 in the environment forces that fallback,
 * so that tests can cover it.
 *
 * Nothing the caller of the API may hold on to lives here: an error that
 * errgroup_wait returns may be passed to a later task, which must see it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

/* 1 once the kernel was found to wipe such memory at a fork, -1 once it
 * was found not to, 0 until then.  A plain word: the atfork child handler
 * asks, where pthread_once would be a page of libc's to map (child.c). */
static int wipe_state;

static size_t rounded(size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return (size + page - 1) / page * page;
}

/* 1 or -1, as wipe_state; 0 when the probe's own mapping, or the advice,
 * ran out of memory, which says nothing of the kernel.  (The advice can:
 * a page merged with its neighbour must be split off again.) */
static int probe(void)
{
	const char *off = secure_getenv("ERRGROUP_DISABLE_WIPEONFORK");
	size_t size = rounded(1);
	void *p;
	int r;

	if (off && *off && strcmp(off, "0") != 0)
		return -1;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 0;
	if (madvise(p, size, MADV_WIPEONFORK) == 0)
		r = 1;
	else
		r = errno == ENOMEM || errno == EAGAIN ? 0 : -1;
	munmap(p, size);
	return r;
}

/*
 * Whether to wipe is decided once, by the kernel's answer to the first
 * advice: a group whose memory a child saw would take the child for its
 * owner, so the answer must hold for every allocation.  A shortage of
 * memory (RLIMIT_AS, say) decides nothing: taken for "no", it left the
 * process in the slower mode for its life.  Threads that ask at once each
 * probe, and the first answer stored is everyone's, so that no allocation
 * is made under one answer and judged under another.  0 while undecided.
 */
static int wipe_decided(void)
{
	int state = __atomic_load_n(&wipe_state, __ATOMIC_ACQUIRE), expected = 0;

	if (state)
		return state;
	state = probe();
	if (state && !__atomic_compare_exchange_n(&wipe_state, &expected, state, false,
						  __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		state = expected;
	return state;
}

/* Zeroed memory of at least size bytes, or NULL. */
void *parentmem_alloc(size_t size)
{
	int wipes = wipe_decided();
	void *p;

	if (!wipes)
		return NULL;   /* no memory for the probe's page either */
	p = mmap(NULL, rounded(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (wipes > 0 && madvise(p, rounded(size), MADV_WIPEONFORK) < 0) {
		munmap(p, rounded(size));
		return NULL;
	}
	return p;
}

void parentmem_free(void *p, size_t size)
{
	if (p)
		munmap(p, rounded(size));
}

/* Whether a forked child sees this memory as zeroes.  Undecided, no such
 * memory exists yet (every allocation decides first), and a fork's child
 * asks (fdreg.c) without probing: "no", as nothing of the library's can
 * be judged by it. */
CHILD_CODE
bool parentmem_wipes(void)
{
	return __atomic_load_n(&wipe_state, __ATOMIC_ACQUIRE) > 0;
}
