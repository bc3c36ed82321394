/*
 * flush.c - stdio output that a fork would otherwise write twice or lose.
 *
 * A child is a copy of its parent's stdio buffers: output the host had
 * buffered when it called errgroup_go would be written again by a task
 * that flushes, and what a task prints sits in its own buffers until they
 * are flushed, which _exit does not do.  So the parent flushes before each
 * fork and the child after the task: the streams that have output
 * pending, and only those.
 *
 * Not fflush(NULL), for two reasons.  It locks every stream, and a stream
 * that another thread holds, as a thread blocked in fgets(stdin) holds
 * stdin, would hold errgroup_go up for as long.  And it takes libc's lock
 * on the list of streams, a write to one of libc's pages: a copy-on-write
 * fault in the parent for every task, and in the child three more, for
 * the code of fflush that a child has not mapped yet (see parentmem.c for
 * what a fault costs).
 *
 * So the list is read through glibc's exported _IO_list_all and the
 * public fields of struct _IO_FILE: without its lock while the process
 * has one thread (__libc_single_threaded), since nothing else can open or
 * close a stream then; under _IO_list_lock otherwise, which glibc's fork
 * takes in a threaded process anyway.  A wide-oriented stream keeps its
 * output elsewhere, so it counts as pending.  The symbols are weak
 * references: a glibc without them gets fflush(NULL), and so does any
 * other C library.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdio.h>
#if __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h>
#endif

#include "internal.h"

#if defined(__GLIBC__)
extern FILE *_IO_list_all __attribute__((weak));
void _IO_list_lock(void) __attribute__((weak));
void _IO_list_unlock(void) __attribute__((weak));

CHILD_CODE
static bool single_threaded(void)
{
#if __has_include(<sys/single_threaded.h>)
	return __libc_single_threaded;
#else
	return false;
#endif
}

CHILD_CODE
static bool pending(FILE *f)
{
	return f->_mode > 0 || f->_IO_write_ptr > f->_IO_write_base;
}

CHILD_CODE
void flush_pending_output(void)
{
	bool locked;

	if (!&_IO_list_all || !_IO_list_lock || !_IO_list_unlock) {
		fflush(NULL);
		return;
	}
	locked = !single_threaded();
	if (locked)
		_IO_list_lock();
	for (FILE *f = _IO_list_all; f; f = f->_chain)
		if (pending(f))
			fflush(f);
	if (locked)
		_IO_list_unlock();
}
#else
void flush_pending_output(void)
{
	fflush(NULL);
}
#endif
