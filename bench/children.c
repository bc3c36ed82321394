/*
 * children.c - thousands of live children: can one group hold N tasks
 * running at once, and what does each cost the parent?
 *
 * With no limit, N tasks are started; each says it has started (a shared
 * counter) and blocks reading a pipe whose only writer left, once every
 * task has started, is the parent.  The parent then counts its own open
 * fds, closes the write end, which releases every task at once (end of
 * file), and waits.  Every task counts itself again when released, so the
 * report says whether all N started, and whether all N ran to the end.
 *
 * A running task costs the parent two fds (its pidfd and the write end of
 * its lifeline pipe), so the soft RLIMIT_NOFILE is raised to the hard
 * limit first; --fd-limit N sets it to N instead, to see where and how the
 * group fails when fds run out.
 *
 * Usage: children [--fd-limit N] [TASKS]   (default 5000)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "errgroup.h"

#define DEFAULT_TASKS 5000
#define START_TIMEOUT_S 60
#define STEPS 5                     /* the start rate is reported per fifth */

struct shared {
	int started;                /* tasks that reached the release pipe */
	int finished;               /* tasks released and done */
};

struct release {
	int read_end, write_end;
	struct shared *counts;      /* MAP_SHARED: the tasks write it */
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The task: drop our copy of the write end (else the pipe never ends),
 * say we started, block until the parent closes its copy. */
static int blocked_task(void *arg)
{
	struct release *rel = arg;
	ssize_t n;
	char c;

	close(rel->write_end);
	__atomic_add_fetch(&rel->counts->started, 1, __ATOMIC_SEQ_CST);
	do
		n = read(rel->read_end, &c, 1);
	while (n < 0 && errno == EINTR);
	if (n != 0)
		return 1;   /* only end of file may release us */
	__atomic_add_fetch(&rel->counts->finished, 1, __ATOMIC_SEQ_CST);
	return 0;
}

static int count_open_fds(void)
{
	struct dirent *e;
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;   /* the directory's own fd */
}

/* Sets the soft fd limit to `wanted`, or to the hard limit when wanted < 0. */
static int set_fd_limit(long wanted, struct rlimit *ret)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	printf("RLIMIT_NOFILE: soft %llu, hard %llu", (unsigned long long)rl.rlim_cur,
	       (unsigned long long)rl.rlim_max);
	rl.rlim_cur = wanted < 0 ? rl.rlim_max : (rlim_t)wanted;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	printf("; soft set to %llu\n", (unsigned long long)rl.rlim_cur);
	*ret = rl;
	return 0;
}

static long mem_available_kib(void)
{
	char line[128];
	long kib = -1;
	FILE *f = fopen("/proc/meminfo", "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "MemAvailable: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* Waits until `want` tasks have said they started, or the timeout. */
static int wait_started(const struct shared *counts, int want)
{
	struct timespec pause = { 0, 1000000 };
	double deadline = now_s() + START_TIMEOUT_S;
	int n;

	while ((n = __atomic_load_n(&counts->started, __ATOMIC_SEQ_CST)) < want &&
	       now_s() < deadline)
		nanosleep(&pause, NULL);
	return n;
}

/* The reference: the same N blocked children from a bare fork loop, which
 * keeps only their pids.  Returns the seconds the forks took, or < 0. */
static double bare_start(int tasks, double *ret_release_s)
{
	int pipe_fds[2], status;
	double t0, t1;
	char c;

	if (pipe2(pipe_fds, O_CLOEXEC) < 0)
		return -1;
	t0 = now_s();
	for (int i = 0; i < tasks; i++) {
		pid_t pid = fork();

		if (pid == 0) {
			close(pipe_fds[1]);
			while (read(pipe_fds[0], &c, 1) < 0 && errno == EINTR)
				;
			_exit(0);
		}
		if (pid < 0) {
			fprintf(stderr, "children: bare fork %d: %s\n", i, strerror(errno));
			tasks = i;
			t0 = -1;
			break;
		}
	}
	t1 = now_s();
	close(pipe_fds[1]);
	close(pipe_fds[0]);
	for (int i = 0; i < tasks; i++)
		if (wait(&status) < 0 && errno == EINTR)
			i--;
	*ret_release_s = now_s() - t1;
	return t0 < 0 ? -1 : t1 - t0;
}

static void report_bare(int tasks)
{
	double release_s, start_s = bare_start(tasks, &release_s);

	if (start_s >= 0)
		printf("reference, bare fork loop: %d blocked children started in %.2f s "
		       "(%.0f/s), released and reaped in %.2f s\n",
		       tasks, start_s, tasks / start_s, release_s);
}

/* What one run of the library saw. */
struct outcome {
	int tasks;                  /* asked for */
	int launched;               /* errgroup_go accepted */
	int go_error;               /* what it returned then, or 0 */
	int started;                /* were blocked at once */
	int fds_before, fds_live;   /* the parent's open fds */
	long mem_before_kib, mem_live_kib;
	double start_s, settle_s, release_s;
	double step_s[STEPS];       /* time to start each fifth of the tasks */
};

/* Starts up to o->tasks blocked tasks, lets them all go, and waits. */
static const struct errgroup_error *run_group(errgroup *g, struct release *rel,
					      struct outcome *o)
{
	const struct errgroup_error *first;
	int step = o->tasks >= STEPS ? o->tasks / STEPS : 0;
	double t0, t1, t2, last_step;

	o->fds_before = count_open_fds();
	o->mem_before_kib = mem_available_kib();
	t0 = last_step = now_s();
	for (int i = 0; i < o->tasks; i++) {
		int r = errgroup_go(g, blocked_task, rel);

		if (r < 0) {
			o->go_error = r;
			break;
		}
		o->launched++;
		if (step && o->launched % step == 0 && o->launched / step <= STEPS) {
			double t = now_s();

			o->step_s[o->launched / step - 1] = t - last_step;
			last_step = t;
		}
	}
	t1 = now_s();
	o->started = wait_started(rel->counts, o->launched);
	t2 = now_s();
	o->fds_live = count_open_fds();
	o->mem_live_kib = mem_available_kib();

	close(rel->write_end);   /* releases them all */
	first = errgroup_wait(g);
	o->start_s = t1 - t0;
	o->settle_s = t2 - t1;
	o->release_s = now_s() - t2;
	return first;
}

static bool report(const struct outcome *o, const struct errgroup_error *first,
		   size_t errors, int finished, const struct rlimit *rl)
{
	int fds_used = o->fds_live - o->fds_before;
	bool pass = o->launched == o->tasks && o->started == o->tasks &&
		    finished == o->tasks && !first;

	printf("asked for %d live tasks; errgroup_go accepted %d", o->tasks, o->launched);
	if (o->go_error)
		printf(", then returned %d (%s)", o->go_error, strerror(-o->go_error));
	printf("\n%d were blocked at once; %d ran to the end after the release; %zu errors\n",
	       o->started, finished, errors);
	if (first)
		printf("first error: task %d (pid %d): %s\n", first->task, (int)first->pid,
		       first->message);
	printf("start: %.2f s (%.0f tasks/s) + %.2f s until all had started; "
	       "release to wait's return: %.2f s\n",
	       o->start_s, o->launched / o->start_s, o->settle_s, o->release_s);
	if (o->launched == o->tasks && o->tasks >= STEPS) {
		/* Each fork costs more as the parent holds more fds: the child
		 * copies the fd table and closes every library fd (fdreg.c). */
		printf("start rate by fifth of the tasks (tasks/s):");
		for (int i = 0; i < STEPS; i++)
			printf(" %.0f", (o->tasks / STEPS) / o->step_s[i]);
		printf("\n");
	}
	if (o->launched > 0)
		printf("parent fds: %d before, %d with %d tasks live (%.2f per task)\n",
		       o->fds_before, o->fds_live, o->launched, (double)fds_used / o->launched);
	/* Rough: the machine is shared, and small counts drown in its noise. */
	if (o->launched >= 1000 && o->mem_before_kib > o->mem_live_kib)
		printf("MemAvailable fell by %.0f MiB, %.0f KiB per live task\n",
		       (double)(o->mem_before_kib - o->mem_live_kib) / 1024,
		       (double)(o->mem_before_kib - o->mem_live_kib) / o->launched);
	if (pass)
		printf("PASS: all %d tasks were live at once and all ran\n", o->tasks);
	else
		printf("FAIL: %d of %d ran (fd limit %llu, %d fds per live task: room for ~%llu)\n",
		       finished, o->tasks, (unsigned long long)rl->rlim_cur,
		       o->launched > 0 ? (fds_used + o->launched / 2) / o->launched : 2,
		       (unsigned long long)(rl->rlim_cur - (rlim_t)o->fds_before) / 2);
	return pass;
}

static void usage(void)
{
	fprintf(stderr, "usage: children [--fd-limit N] [TASKS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const struct errgroup_error *first;
	struct outcome o = { .tasks = DEFAULT_TASKS };
	struct rlimit rl = { 0, 0 };
	struct release rel;
	long fd_limit = -1;
	int pipe_fds[2], r;
	errgroup *g;
	bool pass;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--fd-limit") == 0 && i + 1 < argc)
			fd_limit = atol(argv[++i]);
		else if (argv[i][0] != '-' && atoi(argv[i]) > 0)
			o.tasks = atoi(argv[i]);
		else
			usage();
	}
	r = set_fd_limit(fd_limit, &rl);
	if (r < 0) {
		fprintf(stderr, "\nchildren: setrlimit: %s\n", strerror(-r));
		return 1;
	}
	report_bare(o.tasks);

	rel.counts = mmap(NULL, sizeof *rel.counts, PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (rel.counts == MAP_FAILED || pipe2(pipe_fds, O_CLOEXEC) < 0) {
		perror("children: setup");
		return 1;
	}
	rel.read_end = pipe_fds[0];
	rel.write_end = pipe_fds[1];
	g = errgroup_new();
	if (!g) {
		perror("children: errgroup_new");
		return 1;
	}
	first = run_group(g, &rel, &o);
	pass = report(&o, first, errgroup_error_count(g), rel.counts->finished, &rl);
	errgroup_free(g);
	return pass ? 0 : 1;
}
