/*
 * bench.c - tasks per second: the library against a bare fork loop.
 *
 * What is compared, at the same concurrency C (children in flight):
 *   bare      fork(); the child calls _exit(0); the parent waitpid()s and
 *             forks the next one as soon as one has ended;
 *   errgroup  errgroup_new, errgroup_set_limit(g, C), N x errgroup_go(g,
 *             noop, NULL), errgroup_wait, errgroup_free;
 *   +cancel   the same with errgroup_set_cancel_on_error(g, true), which
 *             gives the group a supervisor thread;
 * and "big host" variants of bare and errgroup, in a process that has first
 * touched 256 MiB of anonymous memory (in 4 KiB pages), so that every fork
 * copies the page tables of that memory.
 *
 * Every measurement runs in a fresh process (this program re-executed with
 * --run), so that one variant cannot change another's conditions: glibc's
 * fork() stays slower for the rest of a process's life once it has had a
 * second thread, the library installs atfork handlers on first use, and
 * the big host's memory must not be inherited by the small one.  Each
 * library variant is measured against its bare loop in rounds of four
 * runs, bare, library, library, bare, and a round's ratio is the
 * library's two throughputs over the bare loop's two: the speed of a
 * shared VM drifts by tens of percent within seconds, and drift that is
 * linear over the four runs cancels that way.  Each run is preceded, in
 * its process, by a short untimed warm-up.
 *
 * Usage: bench [--runs R] [--tasks N] [--big-tasks N] [--big-mib M]
 *        bench --run VARIANT C N [--big-mib M] [--warmup N]
 * The second form runs one measurement and prints one line of numbers; it
 * is what the first form and bench/syscalls.sh run.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "errgroup.h"

#define DEFAULT_RUNS 7              /* rounds of bare, library, library, bare */
#define DEFAULT_TASKS 1000
#define DEFAULT_BIG_TASKS 200
#define DEFAULT_BIG_MIB 256
#define DEFAULT_WARMUP 100
#define DEFAULT_BIG_WARMUP 20       /* a big host's fork is slow: fewer */
#define MAX_RUNS 64

enum variant { BARE, LIB, LIB_CANCEL };

static const char *const variant_names[] = {
	[BARE] = "bare", [LIB] = "errgroup", [LIB_CANCEL] = "errgroup+cancel",
};

/* What one measurement reports; per task unless said otherwise. */
struct sample {
	double tasks_per_s;
	double parent_cpu_us;       /* user + system, every thread of the parent */
	double children_cpu_us;     /* user + system of the reaped children */
	double parent_csw;          /* context switches, voluntary + involuntary */
	double parent_faults;       /* page faults (minor: copy-on-write, mostly) */
	double children_faults;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_us(const struct rusage *ru)
{
	return (double)(ru->ru_utime.tv_sec + ru->ru_stime.tv_sec) * 1e6 +
	       (double)(ru->ru_utime.tv_usec + ru->ru_stime.tv_usec);
}

/* ---- one measurement, in its own process ---- */

static int noop_task(void *arg)
{
	(void)arg;
	return 0;
}

/* Keeps `concurrency` children in flight until `tasks` have run. */
static int run_bare(int concurrency, int tasks)
{
	int started = 0, running = 0, status;
	pid_t pid;

	while (started < tasks || running > 0) {
		while (running < concurrency && started < tasks) {
			pid = fork();
			if (pid == 0)
				_exit(0);
			if (pid < 0)
				return -errno;
			started++;
			running++;
		}
		pid = waitpid(-1, &status, 0);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			return -EPROTO;
		running--;
	}
	return 0;
}

static int run_lib(int concurrency, int tasks, bool cancel_on_error)
{
	errgroup *g = errgroup_new();
	int r = 0;

	if (!g)
		return -errno;
	if (errgroup_set_limit(g, concurrency) < 0 ||
	    errgroup_set_cancel_on_error(g, cancel_on_error) < 0) {
		r = -EINVAL;
		goto out;
	}
	for (int i = 0; i < tasks; i++) {
		r = errgroup_go(g, noop_task, NULL);
		if (r < 0)
			goto out;
	}
	r = errgroup_wait(g) ? -EPROTO : 0;
out:
	errgroup_free(g);
	return r;
}

static int run_variant(enum variant v, int concurrency, int tasks)
{
	if (tasks == 0)
		return 0;
	if (v == BARE)
		return run_bare(concurrency, tasks);
	return run_lib(concurrency, tasks, v == LIB_CANCEL);
}

/* Touches `mib` MiB in 4 KiB pages: a host whose heap is made of small
 * allocations, the common case and the one where fork copies the most
 * page-table entries.  The memory is never freed: the process ends. */
static int grow_host(size_t mib)
{
	size_t size = mib << 20;
	char *p;

	if (mib == 0)
		return 0;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	madvise(p, size, MADV_NOHUGEPAGE);   /* best effort */
	memset(p, 1, size);
	return 0;
}

static int measure(enum variant v, int concurrency, int tasks, size_t big_mib, int warmup)
{
	struct rusage self0, self1, kids0, kids1;
	struct sample s;
	double t0, t1;
	int r;

	r = grow_host(big_mib);
	if (r == 0)
		r = run_variant(v, concurrency, warmup);
	if (r < 0) {
		fprintf(stderr, "bench: %s warm-up: %s\n", variant_names[v], strerror(-r));
		return 1;
	}
	getrusage(RUSAGE_SELF, &self0);
	getrusage(RUSAGE_CHILDREN, &kids0);
	t0 = now_s();
	r = run_variant(v, concurrency, tasks);
	t1 = now_s();
	getrusage(RUSAGE_SELF, &self1);
	getrusage(RUSAGE_CHILDREN, &kids1);
	if (r < 0) {
		fprintf(stderr, "bench: %s: %s\n", variant_names[v], strerror(-r));
		return 1;
	}
	s.tasks_per_s = tasks / (t1 - t0);
	s.parent_cpu_us = (cpu_us(&self1) - cpu_us(&self0)) / tasks;
	s.children_cpu_us = (cpu_us(&kids1) - cpu_us(&kids0)) / tasks;
	s.parent_csw = (double)(self1.ru_nvcsw - self0.ru_nvcsw +
				self1.ru_nivcsw - self0.ru_nivcsw) / tasks;
	s.parent_faults = (double)(self1.ru_minflt - self0.ru_minflt) / tasks;
	s.children_faults = (double)(kids1.ru_minflt - kids0.ru_minflt) / tasks;
	printf("%.1f %.2f %.2f %.3f %.3f %.3f\n", s.tasks_per_s, s.parent_cpu_us,
	       s.children_cpu_us, s.parent_csw, s.parent_faults, s.children_faults);
	return 0;
}

/* ---- the driver ---- */

/* A library variant and its bare loop, at one concurrency and host size:
 * round i ran bare[2i], lib[2i], lib[2i + 1], bare[2i + 1]. */
struct pairing {
	const char *label;
	enum variant variant;
	int concurrency;
	bool big;
	struct sample lib[2 * MAX_RUNS], bare[2 * MAX_RUNS];
};

struct options {
	int runs, tasks, big_tasks;
	size_t big_mib;
};

/* Runs one measurement of v in a fresh copy of this program. */
static int spawn_measurement(const struct pairing *p, enum variant v, const struct options *o,
			     struct sample *ret)
{
	char variant[32], concurrency[16], tasks[16], mib[32], warmup[16], line[256];
	int out[2], status;
	ssize_t n, len = 0;
	pid_t pid;

	snprintf(variant, sizeof variant, "%s", variant_names[v]);
	snprintf(concurrency, sizeof concurrency, "%d", p->concurrency);
	snprintf(tasks, sizeof tasks, "%d", p->big ? o->big_tasks : o->tasks);
	snprintf(mib, sizeof mib, "%zu", p->big ? o->big_mib : 0);
	snprintf(warmup, sizeof warmup, "%d", p->big ? DEFAULT_BIG_WARMUP : DEFAULT_WARMUP);
	if (pipe2(out, O_CLOEXEC) < 0)
		return -errno;
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		dup2(out[1], STDOUT_FILENO);
		execl("/proc/self/exe", "bench", "--run", variant, concurrency, tasks,
		      "--big-mib", mib, "--warmup", warmup, (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	if (pid < 0) {
		close(out[0]);
		return -errno;
	}
	while (len < (ssize_t)sizeof line - 1) {
		n = read(out[0], line + len, sizeof line - 1 - (size_t)len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += n;
	}
	line[len] = '\0';
	close(out[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return -EPROTO;
	if (sscanf(line, "%lf %lf %lf %lf %lf %lf", &ret->tasks_per_s, &ret->parent_cpu_us,
		   &ret->children_cpu_us, &ret->parent_csw, &ret->parent_faults,
		   &ret->children_faults) != 6)
		return -EPROTO;
	return 0;
}

/* One round of p: bare, library, library, bare. */
static int run_round(struct pairing *p, int round, const struct options *o)
{
	struct sample *slots[4] = { &p->bare[2 * round], &p->lib[2 * round],
				    &p->lib[2 * round + 1], &p->bare[2 * round + 1] };
	enum variant order[4] = { BARE, p->variant, p->variant, BARE };
	int r;

	for (int i = 0; i < 4; i++) {
		r = spawn_measurement(p, order[i], o, slots[i]);
		if (r < 0) {
			fprintf(stderr, "\nbench: %s (%s), C=%d: %s\n", p->label,
				variant_names[order[i]], p->concurrency, strerror(-r));
			return r;
		}
	}
	return 0;
}

static int compare_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, compare_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The median of one field over n samples. */
static double median_of(const struct sample *samples, int n, size_t field)
{
	double v[2 * MAX_RUNS];

	for (int i = 0; i < n; i++)
		v[i] = *(const double *)((const char *)&samples[i] + field);
	return median(v, n);
}

static double cpu_of(const struct sample *samples, int n)
{
	double v[2 * MAX_RUNS];

	for (int i = 0; i < n; i++)
		v[i] = samples[i].parent_cpu_us + samples[i].children_cpu_us;
	return median(v, n);
}

/* Round by round, the library's throughput over the bare loop's: median,
 * min and max. */
static void round_ratios(const struct pairing *p, int runs, double *ret_median,
			 double *ret_min, double *ret_max)
{
	double v[MAX_RUNS];

	for (int i = 0; i < runs; i++)
		v[i] = (p->lib[2 * i].tasks_per_s + p->lib[2 * i + 1].tasks_per_s) /
		       (p->bare[2 * i].tasks_per_s + p->bare[2 * i + 1].tasks_per_s);
	*ret_median = median(v, runs);
	*ret_min = v[0];
	*ret_max = v[runs - 1];
}

static void print_table(const struct pairing *pairings, int count, const struct options *o)
{
	size_t tps = offsetof(struct sample, tasks_per_s);
	size_t pf = offsetof(struct sample, parent_faults);
	size_t cf = offsetof(struct sample, children_faults);
	size_t csw = offsetof(struct sample, parent_csw);
	int n = 2 * o->runs;

	printf("\n%-26s %2s %-13s  %-17s %-13s %-25s %-9s\n", "", "", "   tasks/s",
	       "ratio lib/bare", " CPU us/task", "  faults/task: parent, child", " csw/task");
	printf("%-26s %2s %6s %6s  %-17s %6s %6s %6s %6s %6s %6s %4s %4s\n", "variant", "C", "lib",
	       "bare", "median [min-max]", "lib", "bare", "lib", "bare", "lib", "bare", "lib",
	       "bare");
	for (int i = 0; i < count; i++) {
		const struct pairing *p = &pairings[i];
		double r, lo, hi;

		round_ratios(p, o->runs, &r, &lo, &hi);
		printf("%-26s %2d %6.0f %6.0f  %.2f [%.2f-%.2f] %6.0f %6.0f %6.1f %6.1f %6.1f %6.1f "
		       "%4.2f %4.2f\n",
		       p->label, p->concurrency, median_of(p->lib, n, tps), median_of(p->bare, n, tps),
		       r, lo, hi, cpu_of(p->lib, n), cpu_of(p->bare, n), median_of(p->lib, n, pf),
		       median_of(p->bare, n, pf), median_of(p->lib, n, cf),
		       median_of(p->bare, n, cf), median_of(p->lib, n, csw),
		       median_of(p->bare, n, csw));
	}
	printf("\nratio: per round (bare, library, library, bare, each run in a fresh process),\n"
	       "the library's two throughputs over the bare loop's two; the issue's target is\n"
	       ">= 0.90.  tasks/s, CPU time (parent and children), page faults and context\n"
	       "switches are medians over the runs, per task, from getrusage: \"parent\" is\n"
	       "every thread of the process that runs the tasks, \"child\" the reaped\n"
	       "children.\n");
}

static void add_pairing(struct pairing *pairings, int *count, const char *label,
			enum variant v, int concurrency, bool big)
{
	struct pairing *p = &pairings[(*count)++];

	memset(p, 0, sizeof *p);
	p->label = label;
	p->variant = v;
	p->concurrency = concurrency;
	p->big = big;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: bench [--runs R] [--tasks N] [--big-tasks N] [--big-mib M]\n"
		"       bench --run bare|errgroup|errgroup+cancel C N [--big-mib M] [--warmup N]\n");
	exit(2);
}

static int parse_int(const char *s, int min)
{
	char *end;
	long v;

	if (!s)
		usage();
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < min || v > 1000000000)
		usage();
	return (int)v;
}

static int run_main(int argc, char **argv)
{
	int variant = -1, concurrency, tasks, warmup = DEFAULT_WARMUP;
	size_t big_mib = 0;

	if (argc < 5)
		usage();
	for (int v = BARE; v <= LIB_CANCEL; v++)
		if (strcmp(argv[2], variant_names[v]) == 0)
			variant = v;
	if (variant < 0)
		usage();
	concurrency = parse_int(argv[3], 1);
	tasks = parse_int(argv[4], 1);
	for (int i = 5; i < argc; i++) {
		if (strcmp(argv[i], "--big-mib") == 0)
			big_mib = (size_t)parse_int(argv[++i], 0);
		else if (strcmp(argv[i], "--warmup") == 0)
			warmup = parse_int(argv[++i], 0);
		else
			usage();
	}
	return measure((enum variant)variant, concurrency, tasks, big_mib, warmup);
}

int main(int argc, char **argv)
{
	struct options o = { DEFAULT_RUNS, DEFAULT_TASKS, DEFAULT_BIG_TASKS, DEFAULT_BIG_MIB };
	static struct pairing pairings[8];
	int count = 0;
	double t0;

	if (argc > 1 && strcmp(argv[1], "--run") == 0)
		return run_main(argc, argv);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--runs") == 0)
			o.runs = parse_int(argv[++i], 1);
		else if (strcmp(argv[i], "--tasks") == 0)
			o.tasks = parse_int(argv[++i], 1);
		else if (strcmp(argv[i], "--big-tasks") == 0)
			o.big_tasks = parse_int(argv[++i], 1);
		else if (strcmp(argv[i], "--big-mib") == 0)
			o.big_mib = (size_t)parse_int(argv[++i], 1);
		else
			usage();
	}
	if (o.runs > MAX_RUNS)
		usage();

	for (int concurrency = 1; concurrency <= 2; concurrency++) {
		add_pairing(pairings, &count, "errgroup", LIB, concurrency, false);
		add_pairing(pairings, &count, "errgroup+cancel (thread)", LIB_CANCEL, concurrency,
			    false);
		add_pairing(pairings, &count, "errgroup, big host", LIB, concurrency, true);
	}

	printf("bench: %d rounds of bare, library, library, bare; %d tasks a run (big host: "
	       "%d tasks, %zu MiB touched); %ld CPUs online\n",
	       o.runs, o.tasks, o.big_tasks, o.big_mib, sysconf(_SC_NPROCESSORS_ONLN));
	t0 = now_s();
	for (int run = 0; run < o.runs; run++) {
		printf("round %d/%d...", run + 1, o.runs);
		fflush(stdout);
		for (int i = 0; i < count; i++)
			if (run_round(&pairings[i], run, &o) < 0)
				return 1;
		printf(" done (%.0f s)\n", now_s() - t0);
	}
	print_table(pairings, count, &o);
	return 0;
}
