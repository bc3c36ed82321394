/*
 * flush.c - stdio output that a fork would otherwise write twice or lose.
 *
 * A child is a copy of its parent's stdio buffers: output the host had
 * buffered when it called errgroup_go would be written again by a task
 * that flushes, and what a task prints sits in its own buffers until they
 * are flushed, which _exit does not do.  So the parent flushes before each
 * fork and the child after the task.  fflush(NULL) does both, but it takes
 * libc's lock on the list of streams, a write to one of libc's pages: a
 * copy-on-write fault in the parent for every task, and in the child three
 * more, for the code of fflush that a child has not mapped yet (see
 * parentmem.c for what a fault costs).  So the list is first read, without
 * the lock, for a stream with output to write; usually none has, and
 * nothing is written at all.
 *
 * Reading the list without its lock is safe only while no other thread
 * can open or close a stream, that is while the process has one thread
 * (__libc_single_threaded).  The list is glibc's _IO_list_all, an exported
 * symbol, read through the public fields of struct _IO_FILE; it is a weak
 * reference, so that a libc without it gets fflush(NULL) every time.  A
 * wide-oriented stream keeps its output elsewhere, so it counts as having
 * some.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdio.h>
#if __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h>
#endif

#include "internal.h"

extern FILE *_IO_list_all __attribute__((weak));

static bool single_threaded(void)
{
#if __has_include(<sys/single_threaded.h>)
	return __libc_single_threaded;
#else
	return false;
#endif
}

static bool output_pending(void)
{
	if (!&_IO_list_all || !single_threaded())
		return true;
	for (FILE *f = _IO_list_all; f; f = f->_chain)
		if (f->_mode > 0 || f->_IO_write_ptr > f->_IO_write_base)
			return true;
	return false;
}

void flush_pending_output(void)
{
	if (output_pending())
		fflush(NULL);
}
