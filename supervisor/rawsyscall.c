/*
 * rawsyscall.c - the system calls of a child before its task or program
 * runs, made with the instruction itself rather than through libc.
 *
 * Two kinds of child need that.  A forked child has not mapped libc's
 * code (fork copies no page tables for file mappings), so the first call
 * to each libc function costs it a page fault; even libc's syscall() does
 * (a fault is about 2 us on a physical machine, 20 us in the VMs that
 * docs/benchmarks.md measured).  And a command's child shares its parent's
 * memory until it execs (command.c), where a sanitizer's interceptor would
 * update the parent's books and errno would be the parent thread's.
 *
 * Returns the kernel's answer: the result, or -errno; errno is left alone.
 * Architectures without an inline version here use libc's syscall(),
 * which maps its page and, on failure, writes errno (in a command's child,
 * the calling thread's, which is asleep until the exec).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <unistd.h>

#include "internal.h"

CHILD_SHARING_MEMORY CHILD_CODE
long raw_syscall(long number, long a, long b, long c, long d, long e, long f)
{
#if defined(__x86_64__)
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(number), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
#elif defined(__aarch64__)
	register long x8 __asm__("x8") = number;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;

	__asm__ volatile("svc 0"
			 : "+r"(x0)
			 : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
			 : "memory");
	return x0;
#else
	long ret = syscall(number, a, b, c, d, e, f);

	return ret < 0 ? -errno : ret;
#endif
}
