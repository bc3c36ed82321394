/*
 * test_stress.c - the group under load: exact accounting of 10 000 tasks
 * submitted from eight threads while another waits and a third cancels,
 * and children of a threaded host that churns malloc never hanging at fork.
 *
 * The threads only record what they saw; the main thread asserts once they
 * are joined (cmocka's asserts are not thread-safe).  Tasks learn what to do
 * from their argument, so the test knows each task's expected end without
 * any state shared with the children.
 *
 * ERRGROUP_STRESS=1 runs many more rounds and children (make stress); the
 * default sizes keep make check short.
 */
#include "helpers.h"

#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>

/* splitmix64: a seeded, reproducible sequence, the same in every build. */
static uint64_t next_random(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static bool stress_requested(void)
{
	const char *s = getenv("ERRGROUP_STRESS");

	return s && *s && strcmp(s, "0") != 0;
}

/* ---- exact accounting: 8 threads, one group, random failures ---- */

#define SUBMITTERS 8
#define TASKS 10000
#define TASKS_PER_SUBMITTER (TASKS / SUBMITTERS)
#define VALGRIND_TASKS_PER_SUBMITTER 50
#define SANITIZER_TASKS_PER_SUBMITTER 250

/* What a task is told to do: the low two bits of its argument, and a
 * value (return code or exit status) in the bits above. */
enum behaviour { SUCCEED, RETURN_CODE, EXIT_STATUS, CRASH };

static void *behaviour_arg(enum behaviour b, int value)
{
	return (void *)(intptr_t)(((intptr_t)value << 2) | b);
}

static enum behaviour arg_behaviour(intptr_t word)
{
	return (enum behaviour)(word & 3);
}

static int arg_value(intptr_t word)
{
	return (int)(word >> 2);
}

static int act(void *arg)
{
	intptr_t word = (intptr_t)arg;

	switch (arg_behaviour(word)) {
	case SUCCEED:
		return 0;
	case RETURN_CODE:
		return arg_value(word);
	case EXIT_STATUS:
		_exit(arg_value(word));
	case CRASH:
		/* Thousands of core dumps would cost more than the test. */
		prctl(PR_SET_DUMPABLE, 0);
		raise(SIGSEGV);
		return 99;   /* not a crash: the test reports a wrong cause */
	}
	return 98;
}

/* Success 40%, the rest split between the three ways to fail.  Return
 * codes go above 255, where the exit status alone would cut them. */
static void *random_behaviour(uint64_t *rng)
{
	uint64_t r = next_random(rng);

	switch (r % 10) {
	case 0: case 1: case 2: case 3:
		return behaviour_arg(SUCCEED, 0);
	case 4: case 5:
		return behaviour_arg(RETURN_CODE, 1 + (int)((r >> 8) % 100000));
	case 6: case 7:
		return behaviour_arg(EXIT_STATUS, 1 + (int)((r >> 8) % 255));
	default:
		return behaviour_arg(CRASH, 0);
	}
}

/* The exit status a failing task leaves (what a canceled failure carries). */
static int exit_code_of(intptr_t word)
{
	int value = arg_value(word);

	switch (arg_behaviour(word)) {
	case RETURN_CODE:
		return (value & 0xff) ? (value & 0xff) : 1;
	case EXIT_STATUS:
		return value;
	case CRASH:
		return SIGSEGV;
	default:
		return 0;
	}
}

struct submitter {
	errgroup *g;
	pthread_barrier_t *start;
	atomic_int *accepted;              /* go() calls that returned an index */
	int count;                         /* tasks this thread submits */
	void *args[TASKS_PER_SUBMITTER];   /* what each task is told to do */
	int result[TASKS_PER_SUBMITTER];   /* what each go() returned */
};

static void *submit(void *arg)
{
	struct submitter *s = arg;

	pthread_barrier_wait(s->start);
	for (int i = 0; i < s->count; i++) {
		s->result[i] = errgroup_go(s->g, act, s->args[i]);
		if (s->result[i] >= 0)
			atomic_fetch_add(s->accepted, 1);
	}
	return NULL;
}

/* Calls wait over and over while tasks come and go: each answer must be
 * none yet, or the group's first error, which never changes once set. */
struct waiter {
	errgroup *g;
	pthread_barrier_t *start;
	atomic_bool *submitters_done;
	int calls;
	const struct errgroup_error *first_seen;
	bool first_changed;                /* a later answer differed from first_seen */
};

static void *wait_repeatedly(void *arg)
{
	struct waiter *w = arg;

	pthread_barrier_wait(w->start);
	while (!atomic_load(w->submitters_done)) {
		const struct errgroup_error *e = errgroup_wait(w->g);

		w->calls++;
		if (!w->first_seen)
			w->first_seen = e;
		else if (e != w->first_seen)
			w->first_changed = true;
		/* wait returns at once while nothing runs: let the submitters on. */
		sched_yield();
	}
	return NULL;
}

struct canceler {
	errgroup *g;
	pthread_barrier_t *start;
	atomic_int *accepted;
	int cancel_after;                  /* accepted tasks before it cancels */
};

static void *cancel_after(void *arg)
{
	struct canceler *c = arg;

	pthread_barrier_wait(c->start);
	while (atomic_load(c->accepted) < c->cancel_after)
		sched_yield();
	errgroup_cancel(c->g);
	return NULL;
}

struct round_plan {
	uint64_t seed;
	int limit;                         /* < 0: none */
	bool cancel;
	int per_submitter;
};

/* The round's bookkeeping, indexed by task index; static: too big for a stack. */
static void *arg_at_index[TASKS];
static int errors_at_index[TASKS];

/* An error of a canceled round: the task's own failure, or the signal
 * the group sent (SIGTERM, or SIGKILL after the grace). */
static void check_canceled_error(const struct errgroup_error *e, intptr_t word)
{
	if (e->code == SIGTERM || e->code == SIGKILL)
		return;
	assert_int_not_equal(arg_behaviour(word), SUCCEED);
	assert_int_equal(e->code, exit_code_of(word));
}

static void check_own_error(const struct errgroup_error *e, intptr_t word)
{
	switch (arg_behaviour(word)) {
	case SUCCEED:
		print_error("task %d succeeds, yet failed: %s\n", e->task, e->message);
		fail();
	case RETURN_CODE:
		assert_int_equal(e->cause, ERRGROUP_RETURNED);
		assert_int_equal(e->code, arg_value(word));
		return;
	case EXIT_STATUS:
		assert_int_equal(e->cause, ERRGROUP_EXITED);
		assert_int_equal(e->code, arg_value(word));
		return;
	case CRASH:
		assert_int_equal(e->cause, ERRGROUP_SIGNALED);
		assert_int_equal(e->code, SIGSEGV);
		return;
	}
}

static void check_round(errgroup *g, const struct round_plan *plan, struct submitter *subs,
			int accepted)
{
	int failing = 0, seen = 0;
	size_t errors;

	for (int i = 0; i < TASKS; i++)
		arg_at_index[i] = NULL;
	memset(errors_at_index, 0, sizeof errors_at_index);

	for (int t = 0; t < SUBMITTERS; t++) {
		bool canceled = false;

		for (int i = 0; i < subs[t].count; i++) {
			int r = subs[t].result[i];

			if (r == -ECANCELED) {
				assert_true(plan->cancel);
				canceled = true;
				continue;
			}
			/* Cancellation is final; nothing else may fail. */
			assert_false(canceled);
			assert_in_range(r, 0, accepted - 1);
			assert_null(arg_at_index[r]);
			arg_at_index[r] = subs[t].args[i];
			seen++;
			if (arg_behaviour((intptr_t)subs[t].args[i]) != SUCCEED)
				failing++;
		}
	}
	/* accepted distinct indices below accepted: each of 0..accepted-1 once. */
	assert_int_equal(seen, accepted);

	errors = errgroup_error_count(g);
	for (size_t i = 0; i < errors; i++) {
		const struct errgroup_error *e = errgroup_error_at(g, i);
		intptr_t word;

		assert_non_null(e);
		assert_in_range(e->task, 0, accepted - 1);
		assert_true(e->pid > 0);
		assert_non_null(e->message);
		errors_at_index[e->task]++;
		assert_int_equal(errors_at_index[e->task], 1);
		word = (intptr_t)arg_at_index[e->task];
		if (e->cause == ERRGROUP_CANCELED) {
			assert_true(plan->cancel);
			check_canceled_error(e, word);
		} else {
			check_own_error(e, word);
		}
	}
	assert_null(errgroup_error_at(g, errors));
	/* Every failing task is exactly one error; without a cancel, no
	 * successful task is one. */
	for (int index = 0; index < accepted; index++)
		if (arg_behaviour((intptr_t)arg_at_index[index]) != SUCCEED)
			assert_int_equal(errors_at_index[index], 1);
	if (!plan->cancel)
		assert_int_equal(errors, failing);
	else
		assert_in_range(errors, failing, accepted);
}

static void run_accounting_round(const struct round_plan *plan)
{
	static struct submitter subs[SUBMITTERS];
	pthread_t submitters[SUBMITTERS], wait_thread, cancel_thread;
	atomic_bool submitters_done = false;
	atomic_int accepted = 0;
	pthread_barrier_t start;
	struct waiter w;
	struct canceler c;
	uint64_t rng = plan->seed;
	int fds_before = open_fd_count(), parties = SUBMITTERS + 1 + plan->cancel;
	const struct errgroup_error *first;
	errgroup *g = errgroup_new();

	assert_non_null(g);
	if (plan->limit > 0)
		assert_int_equal(errgroup_set_limit(g, plan->limit), 0);
	assert_int_equal(pthread_barrier_init(&start, NULL, (unsigned)parties), 0);
	for (int t = 0; t < SUBMITTERS; t++) {
		subs[t] = (struct submitter){ .g = g, .start = &start, .accepted = &accepted,
					      .count = plan->per_submitter };
		for (int i = 0; i < subs[t].count; i++)
			subs[t].args[i] = random_behaviour(&rng);
	}
	c = (struct canceler){ .g = g, .start = &start, .accepted = &accepted,
			       .cancel_after = (int)(next_random(&rng) %
						     (uint64_t)(SUBMITTERS * plan->per_submitter)) };
	print_message("seed %llu, limit %d, %s\n", (unsigned long long)plan->seed, plan->limit,
		      plan->cancel ? "cancel" : "no cancel");

	w = (struct waiter){ .g = g, .start = &start, .submitters_done = &submitters_done };
	assert_int_equal(pthread_create(&wait_thread, NULL, wait_repeatedly, &w), 0);
	if (plan->cancel)
		assert_int_equal(pthread_create(&cancel_thread, NULL, cancel_after, &c), 0);
	for (int t = 0; t < SUBMITTERS; t++)
		assert_int_equal(pthread_create(&submitters[t], NULL, submit, &subs[t]), 0);
	for (int t = 0; t < SUBMITTERS; t++)
		assert_int_equal(pthread_join(submitters[t], NULL), 0);
	atomic_store(&submitters_done, true);
	assert_int_equal(pthread_join(wait_thread, NULL), 0);
	if (plan->cancel)
		assert_int_equal(pthread_join(cancel_thread, NULL), 0);

	first = errgroup_wait(g);
	/* Everything started is reaped: no zombie, no child at all. */
	assert_true(no_children_left());
	assert_ptr_equal(first, errgroup_error_at(g, 0));
	assert_true(w.calls > 0);
	assert_false(w.first_changed);
	assert_true(w.first_seen == NULL || w.first_seen == first);
	check_round(g, plan, subs, atomic_load(&accepted));
	print_message("%d accepted, %zu errors\n", atomic_load(&accepted), errgroup_error_count(g));
	if (plan->cancel) {
		assert_int_equal(errgroup_go(g, act, behaviour_arg(SUCCEED, 0)), -ECANCELED);
		assert_int_equal(errgroup_try_go(g, act, behaviour_arg(SUCCEED, 0)), -ECANCELED);
	} else {
		/* Nothing went missing: the next task gets the next index. */
		assert_int_equal(errgroup_go(g, act, behaviour_arg(SUCCEED, 0)),
				 SUBMITTERS * plan->per_submitter);
		assert_ptr_equal(errgroup_wait(g), first);
	}
	pthread_barrier_destroy(&start);
	errgroup_free(g);
	assert_true(no_children_left());
	assert_int_equal(open_fd_count(), fds_before);
}

/* Rounds alternate: no limit or a small one; no cancel, or a cancel at a
 * random point.  Round 0 is the plain one, round 1 cancels at a limit. */
static void test_ten_thousand_tasks_from_eight_threads_keep_exact_accounting(void **state)
{
	int rounds = stress_requested() ? 24 : 3;
	int per_submitter = TASKS_PER_SUBMITTER;

	(void)state;
	/* Slower forks, and under TSan some 17 MiB per live child. */
	if (under_valgrind())
		per_submitter = VALGRIND_TASKS_PER_SUBMITTER;
	else if (under_sanitizer())
		per_submitter = SANITIZER_TASKS_PER_SUBMITTER;
	for (int round = 0; round < rounds; round++) {
		struct round_plan plan = {
			.seed = (uint64_t)round + 1,
			.limit = round % 2 ? 16 : -1,
			.cancel = round % 3 != 0,
			.per_submitter = per_submitter,
		};

		run_accounting_round(&plan);
	}
}

/* ---- children of a threaded host never hang at fork ---- */

/*
 * The scenario runs in a fresh exec of this program, because glibc reads
 * its tunables at startup: one malloc arena for every thread and no
 * per-thread cache, so that the churning threads contend for the one
 * arena lock that a fork must not leave held in the child.
 */
#define FORK_STRESS_RUNNER "--fork-stress-runner"
#define FORK_STRESS_TUNABLES "glibc.malloc.arena_max=1:glibc.malloc.tcache_count=0"
#define CHURNERS 4
#define CHURN_SLOTS 32
#define FORK_TASKS_PER_SUBMITTER 250
#define FORK_STRESS_TASKS_PER_SUBMITTER 2500
#define MMAP_THRESHOLD (128 * 1024)

static atomic_bool churn_stop;

/* Allocation sizes: mostly small, one in eight above the mmap threshold,
 * which a fixed threshold keeps on mmap (see run_fork_stress). */
static size_t random_size(uint64_t *rng)
{
	uint64_t r = next_random(rng);

	if (r % 8 == 0)
		return MMAP_THRESHOLD + (size_t)((r >> 8) % (4 * MMAP_THRESHOLD));
	return 1 + (size_t)((r >> 8) % 4096);
}

static void *churn(void *arg)
{
	uint64_t rng = (uint64_t)(uintptr_t)arg;
	char *slots[CHURN_SLOTS] = { NULL };

	while (!atomic_load_explicit(&churn_stop, memory_order_relaxed)) {
		size_t i = (size_t)(next_random(&rng) % CHURN_SLOTS), size = random_size(&rng);

		free(slots[i]);
		slots[i] = malloc(size);
		if (slots[i]) {
			slots[i][0] = 1;
			slots[i][size - 1] = 1;
		}
	}
	for (size_t i = 0; i < CHURN_SLOTS; i++)
		free(slots[i]);
	return NULL;
}

/* Shared with the children: how many ran their work to the end. */
struct fork_counts {
	int finished;
};

static struct fork_counts *fork_counts;

/* The task: the malloc and stdio work a child of a threaded host does
 * first, each a lock that another thread may have held at the fork. */
static int malloc_and_print(void *arg)
{
	uint64_t rng = (uint64_t)(uintptr_t)arg;
	FILE *devnull = fopen("/dev/null", "we");

	if (!devnull)
		return 2;
	for (int i = 0; i < 16; i++) {
		size_t size = random_size(&rng);
		char *p = malloc(size);

		if (!p) {
			fclose(devnull);
			return 3;
		}
		snprintf(p, size, "%zu bytes", size);
		fputs(p, devnull);
		free(p);
	}
	if (fclose(devnull) != 0)
		return 4;
	__atomic_add_fetch(&fork_counts->finished, 1, __ATOMIC_SEQ_CST);
	return 0;
}

struct fork_submitter {
	errgroup *g;
	int thread, count;
	int accepted;
};

static void *submit_forks(void *arg)
{
	struct fork_submitter *s = arg;

	for (int i = 0; i < s->count; i++) {
		uintptr_t seed = (uintptr_t)(s->thread * s->count + i + 1);

		if (errgroup_go(s->g, malloc_and_print, (void *)seed) >= 0)
			s->accepted++;
	}
	return NULL;
}

struct waited {
	errgroup *g;
	int done_fd;                       /* eventfd, written once wait returned */
	const struct errgroup_error *result;
};

static void *wait_then_signal(void *arg)
{
	struct waited *w = arg;
	uint64_t one = 1;

	w->result = errgroup_wait(w->g);
	if (write(w->done_fd, &one, sizeof one) != sizeof one)
		abort();
	return NULL;
}

/* How many malloc arenas glibc made: one "<heap nr=" per arena. */
static int malloc_arena_count(void)
{
	char *text = NULL, *p;
	size_t len = 0;
	int n = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		return -1;
	malloc_info(0, f);
	fclose(f);
	for (p = text; (p = strstr(p, "<heap nr=")); p++)
		n++;
	free(text);
	return n;
}

/*
 * The exec'd side: submitters start the tasks while churners run, then
 * every child must be reaped within WAIT_LIMIT_MS; those still alive then
 * are hung.  Prints "tasks accepted finished errors hung arenas" and
 * leaves with _exit, so that hung children are killed by their lifelines
 * rather than by errgroup_free racing a wait that never returned.
 */
static int run_fork_stress(void)
{
	static struct fork_submitter subs[SUBMITTERS];
	pthread_t submitters[SUBMITTERS], churners[CHURNERS], waiter;
	struct pollfd p = { .events = POLLIN };
	int per_submitter = stress_requested() ? FORK_STRESS_TASKS_PER_SUBMITTER
					       : FORK_TASKS_PER_SUBMITTER;
	int accepted = 0, hung = 0, errors = -1, r;
	struct waited w;
	errgroup *g;

	/* A fixed threshold: glibc would otherwise raise it after the first
	 * large free, and large blocks would stop being mmap'd. */
	mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
	fork_counts = mmap(NULL, sizeof *fork_counts, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	g = errgroup_new();
	p.fd = eventfd(0, EFD_CLOEXEC);
	if (fork_counts == MAP_FAILED || !g || p.fd < 0)
		return 1;

	for (uintptr_t i = 0; i < CHURNERS; i++)
		if (pthread_create(&churners[i], NULL, churn, (void *)(i + 1)) != 0)
			return 1;
	for (int t = 0; t < SUBMITTERS; t++) {
		subs[t] = (struct fork_submitter){ .g = g, .thread = t, .count = per_submitter };
		if (pthread_create(&submitters[t], NULL, submit_forks, &subs[t]) != 0)
			return 1;
	}
	for (int t = 0; t < SUBMITTERS; t++) {
		pthread_join(submitters[t], NULL);
		accepted += subs[t].accepted;
	}

	w = (struct waited){ .g = g, .done_fd = p.fd };
	if (pthread_create(&waiter, NULL, wait_then_signal, &w) != 0)
		return 1;
	do
		r = poll(&p, 1, WAIT_LIMIT_MS);
	while (r < 0 && errno == EINTR);
	if (r == 1) {
		pthread_join(waiter, NULL);
		errors = (int)errgroup_error_count(g);
	} else {
		hung = count_live_children();
	}
	atomic_store(&churn_stop, true);
	for (int i = 0; i < CHURNERS; i++)
		pthread_join(churners[i], NULL);

	printf("%d %d %d %d %d %d\n", SUBMITTERS * per_submitter, accepted,
	       __atomic_load_n(&fork_counts->finished, __ATOMIC_SEQ_CST), errors, hung,
	       malloc_arena_count());
	fflush(stdout);
	if (r == 1)
		errgroup_free(g);
	_exit(0);
}

static void test_children_of_a_threaded_host_never_hang_at_fork(void **state)
{
	char exe[PATH_MAX], report[256];
	int out[2], status, tasks, accepted, finished, errors, hung, arenas;
	size_t len = 0;
	ssize_t n;
	pid_t pid;

	(void)state;
	/* The promise is glibc's malloc.  A sanitizer's replaces it, and
	 * GCC 12's is not made safe across fork: a child spins forever on
	 * the lock of its large block allocator when a churning thread held
	 * it at the fork (one child in ten under ASan here). */
	if (under_sanitizer())
		skip();
	n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	assert_true(n > 0);
	exe[n] = '\0';
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* dup2 clears close-on-exec: the runner reports on stdout. */
		if (dup2(out[1], STDOUT_FILENO) < 0 ||
		    setenv("GLIBC_TUNABLES", FORK_STRESS_TUNABLES, 1) < 0)
			_exit(126);
		execl(exe, exe, FORK_STRESS_RUNNER, (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	/* Up to the end of the line, not of the pipe: hung children would
	 * hold their copies of it open. */
	do {
		n = read(out[0], report + len, sizeof report - 1 - len);
		if (n > 0)
			len += (size_t)n;
		report[len] = '\0';
	} while ((n > 0 || (n < 0 && errno == EINTR)) && !strchr(report, '\n') &&
		 len < sizeof report - 1);
	close(out[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	assert_int_equal(sscanf(report, "%d %d %d %d %d %d", &tasks, &accepted, &finished,
				&errors, &hung, &arenas), 6);
	print_message("%d children of a host with %d threads churning malloc: %d hung\n",
		      tasks, CHURNERS, hung);
	assert_true(tasks >= 1000);
	assert_int_equal(hung, 0);
	assert_int_equal(accepted, tasks);
	assert_int_equal(finished, tasks);
	assert_int_equal(errors, 0);
	/* The tunables took effect: every thread shared the one arena. */
	assert_int_equal(arenas, 1);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		census_test(test_ten_thousand_tasks_from_eight_threads_keep_exact_accounting),
		census_test(test_children_of_a_threaded_host_never_hang_at_fork),
	};

	if (argc == 2 && strcmp(argv[1], FORK_STRESS_RUNNER) == 0)
		return run_fork_stress();
	census_begin();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
