/*
 * test_cost.c - what starting a task costs the caller, counted rather than
 * timed: page faults, which getrusage counts exactly, against a bare
 * fork + _exit + waitpid loop in the same process.
 *
 * After a fork every private page the parent and the child share is
 * write-protected, and the first write to each, on either side, is a
 * fault: 2 us on a physical machine, 20 us and more in the VMs that
 * docs/benchmarks.md measured, where they were most of what the library
 * cost.  The library keeps its books in memory no child shares
 * (parentmem.c) and its child away from libc's code (rawsyscall.c), so a
 * task costs the parent no fault the bare loop does not have, and its
 * child about as many.  Speed itself is for make bench; these counts do
 * not depend on how busy the machine is.
 *
 * The file is built twice: against the static library (test_cost) and
 * against the shared one (test_cost_shared), which is what most programs
 * link; so it uses the API only.  Both are linked with -z now: a child's
 * first call to a function bound lazily would cost it a symbol lookup and
 * its faults, in the bare loop as in the library.  Valgrind and the
 * sanitizers add faults of their own, and where the kernel does not wipe
 * memory in children (parentmem.c) the library cannot avoid them; without
 * pidfds (ERRGROUP_DISABLE_PIDFD=1), exits are found by a sweep whose
 * deeper calls may take one more stack page.  The tests count the path
 * that hosts take, and skip elsewhere.
 */
#include "helpers.h"

#include <alloca.h>
#include <pthread.h>
#include <sys/resource.h>

#define WARMUP_TASKS 10
#define COUNTED_TASKS 100
#define STACK_OFFSETS 8     /* across a page, STACK_STEP apart */
#define STACK_STEP 512

struct faults {
	double parent;      /* per task */
	double child;
};

static int noop(void *arg)
{
	(void)arg;
	return 0;
}

static void usage(struct rusage *self, struct rusage *children)
{
	assert_int_equal(getrusage(RUSAGE_SELF, self), 0);
	assert_int_equal(getrusage(RUSAGE_CHILDREN, children), 0);
}

static struct faults per_task(const struct rusage *self0, const struct rusage *children0, int n)
{
	struct rusage self, children;
	struct faults f;

	usage(&self, &children);
	f.parent = (double)(self.ru_minflt - self0->ru_minflt) / n;
	f.child = (double)(children.ru_minflt - children0->ru_minflt) / n;
	return f;
}

/* n children, one at a time: fork, _exit, waitpid. */
static void bare_loop(int n)
{
	for (int i = 0; i < n; i++) {
		int status;
		pid_t pid = fork();

		if (pid == 0)
			_exit(0);
		assert_true(pid > 0);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_int_equal(status, 0);
	}
}

static struct faults bare_faults(void)
{
	struct rusage self, children;

	bare_loop(WARMUP_TASKS);
	usage(&self, &children);
	bare_loop(COUNTED_TASKS);
	return per_task(&self, &children, COUNTED_TASKS);
}

/* The same through a group with a limit of 1, counted once the group has
 * made its stock of task structs and records. */
static struct faults group_faults(void)
{
	struct rusage self, children;
	errgroup *g = errgroup_new();

	assert_non_null(g);
	assert_int_equal(errgroup_set_limit(g, 1), 0);
	for (int i = 0; i < WARMUP_TASKS; i++)
		assert_int_equal(errgroup_go(g, noop, NULL), i);
	assert_null(errgroup_wait(g));
	usage(&self, &children);
	for (int i = 0; i < COUNTED_TASKS; i++)
		assert_int_equal(errgroup_go(g, noop, NULL), WARMUP_TASKS + i);
	assert_null(errgroup_wait(g));
	errgroup_free(g);
	return per_task(&self, &children, COUNTED_TASKS);
}

/*
 * Whether one more stack page is written after a fork depends on where
 * the frames fall against page boundaries, which the kernel randomizes:
 * the same binary counts one more fault per task in some runs than in
 * others.  So each loop runs at STACK_OFFSETS depths across a page, and
 * the fewest faults it took at any of them count.
 */
static struct faults at_depth(struct faults (*measure)(void), size_t depth)
{
	volatile char *pad = alloca(depth + 1);

	pad[0] = 0;
	return measure();
}

static struct faults fewest(struct faults (*measure)(void))
{
	struct faults best = { 1e9, 1e9 };

	for (size_t k = 0; k < STACK_OFFSETS; k++) {
		struct faults f = at_depth(measure, k * STACK_STEP);

		if (f.parent < best.parent)
			best.parent = f.parent;
		if (f.child < best.child)
			best.child = f.child;
	}
	return best;
}

static struct faults bare, group, bare_threaded, group_threaded;
static bool counted;

/* Whether the library's memory is wiped in children, as parentmem.c
 * decides it: the kernel takes the advice and no one said not to. */
static bool kernel_wipes(void)
{
	const char *off = getenv("ERRGROUP_DISABLE_WIPEONFORK");
	long page = sysconf(_SC_PAGESIZE);
	void *p;
	bool wipes;

	if (off && *off && strcmp(off, "0") != 0)
		return false;
	p = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	wipes = madvise(p, (size_t)page, MADV_WIPEONFORK) == 0;
	munmap(p, (size_t)page);
	return wipes;
}

/* A second thread, idle until the counts are taken. */
static void *idle(void *arg)
{
	char byte;

	return read((int)(intptr_t)arg, &byte, 1) < 0 ? NULL : arg;
}

static int measure(void **state)
{
	pthread_t thread;
	int hold[2];

	(void)state;
	if (under_valgrind() || under_sanitizer() || !kernel_wipes() || !pidfds_in_use())
		return 0;
	counted = true;
	bare = fewest(bare_faults);
	group = fewest(group_faults);
	print_message("faults per task, parent and child: bare fork %.2f %.2f, errgroup %.2f %.2f\n",
		      bare.parent, bare.child, group.parent, group.child);
	/* glibc writes the thread's descriptor in a cancellable call only
	 * when the process has threads: so does go() (internal.h,
	 * go_cancellation_off). */
	assert_int_equal(pipe2(hold, O_CLOEXEC), 0);
	assert_int_equal(pthread_create(&thread, NULL, idle, (void *)(intptr_t)hold[0]), 0);
	bare_threaded = fewest(bare_faults);
	group_threaded = fewest(group_faults);
	close(hold[1]);
	assert_int_equal(pthread_join(thread, NULL), 0);
	close(hold[0]);
	print_message("with a second thread: bare fork %.2f %.2f, errgroup %.2f %.2f\n",
		      bare_threaded.parent, bare_threaded.child, group_threaded.parent,
		      group_threaded.child);
	return 0;
}

static void test_a_task_costs_the_parent_no_fault_a_bare_fork_does_not(void **state)
{
	(void)state;
	if (!counted)
		skip();
	/* Before parentmem it was 6 more: the group, the task, malloc's
	 * arena, the registry, the thread-locals, stdio's lock. */
	assert_true(group.parent <= bare.parent + 0.5);
}

/* Nor in a host with threads, where go() turns cancellation off. */
static void test_a_task_of_a_threaded_host_costs_the_parent_no_fault_a_bare_fork_does_not(void **state)
{
	(void)state;
	if (!counted)
		skip();
	assert_true(group_threaded.parent <= bare_threaded.parent + 0.5);
}

static void test_a_task_child_faults_about_as_often_as_a_bare_fork_child(void **state)
{
	(void)state;
	if (!counted)
		skip();
	/* One more: the child records the task's two fds for all its
	 * threads (child.c).  The library's code may be one more window of
	 * pages to map than the test's (where the 64 KiB windows fall moves
	 * with the load address; a shared library is always one).  Before
	 * rawsyscall.c and flush.c it was 6 more: libc's syscall() and
	 * fflush, stdio's lock, the registry. */
	assert_true(group.child <= bare.child + 2.0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		census_test(test_a_task_costs_the_parent_no_fault_a_bare_fork_does_not),
		census_test(test_a_task_of_a_threaded_host_costs_the_parent_no_fault_a_bare_fork_does_not),
		census_test(test_a_task_child_faults_about_as_often_as_a_bare_fork_child),
	};

	census_begin();
	return cmocka_run_group_tests(tests, measure, NULL);
}
