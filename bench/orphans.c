/*
 * orphans.c - how soon the tasks die once the host has died.
 *
 * The orphan kill is the kernel's (supervisor/lifeline.c): when the host's
 * last copy of a task's lifeline pipe closes, the kernel sends SIGKILL to
 * the task's process group.  This measures the time from kill(host,
 * SIGKILL) until every task and every grandchild has exited.
 *
 * One round: this process, a child subreaper so that the orphans come back
 * to it to be reaped, forks a host; the host starts N tasks of one kind,
 * and each task forks a grandchild (which stays in the task's process
 * group) and sends both pids on a pipe:
 *   fn   errgroup_go: a function task;
 *   cmd  errgroup_go_cmd: this program again (--cmd-task FD), which does the
 *        same after exec;
 *   bare the reference: a plain fork() that calls setpgid(0, 0), with no
 *        library and no lifeline; the bench itself then sends SIGKILL to
 *        each task's process group (N kill calls) just before the host's.
 *        It shows what 2N processes cost to kill and to exit here, with
 *        the same memory, whoever sends the signals.
 * Once all N pairs have come, this process opens a pidfd for each of the 2N
 * processes and for the host, puts them all in an epoll set, reads the
 * clock, SIGKILLs the host, and waits until every pidfd is readable (its
 * process has exited).  It notes when the host's pidfd turned readable and
 * when the last of the 2N did, then reaps everything.
 *
 * What the delay holds: the host's exit up to the closing of its fds (the
 * kernel tears down its address space first), the signal to each process
 * group, the exit of each of the 2N killed processes (which share the
 * machine's cores), and this process's wake-up from epoll_wait.
 *
 * The rounds of all configurations are interleaved (round 1 of each, then
 * round 2...), so that the drift of a shared machine falls on all alike.
 * The load average is printed before and after.
 *
 * Usage: orphans [--rounds R] [--host-mib M] [--kinds fn,cmd,bare] [N...]
 * N defaults to 1 10 100 1000; R defaults to 100 rounds for N <= 10, 50
 * for N <= 100, 20 above; --host-mib makes the host touch M MiB of memory
 * (4 KiB pages) before it starts the tasks.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "errgroup.h"

#define MAX_CONFIGS 32
#define START_TIMEOUT_MS 120000     /* the tasks of one round must start by then */
#define KILL_TIMEOUT_MS 60000       /* and die by then after the host */

enum kind { FN, CMD, BARE, KINDS };

static const char *const kind_names[] = { [FN] = "fn", [CMD] = "cmd", [BARE] = "bare" };

/* What a task sends once its grandchild exists: one write, atomic. */
struct pair {
	int32_t task, grandchild;
};

struct config {
	enum kind kind;
	int tasks;
	int rounds;
	double *all_us;             /* per round: until the last of the 2N died */
	double *host_us;            /* per round: until the host itself died */
	int done;
};

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* In a task: a grandchild in the task's process group, both pids sent,
 * then block until killed. */
static _Noreturn void fork_grandchild_report_and_block(int fd)
{
	struct pair p = { .task = getpid() };
	pid_t grandchild = fork();

	if (grandchild == 0) {
		for (;;)
			pause();
	}
	p.grandchild = grandchild;
	if (write(fd, &p, sizeof p) != (ssize_t)sizeof p)
		_exit(1);
	for (;;)
		pause();
}

static int report_fd = -1;          /* in the host: the pipe to the bench */

static int fn_task(void *arg)
{
	(void)arg;
	fork_grandchild_report_and_block(report_fd);
}

/* The host: starts the tasks, then waits to be killed.  The pipe's write
 * end is dup'ed without O_CLOEXEC so that programs keep it across exec. */
static _Noreturn void host(const struct config *c, int pipe_write_end, size_t host_mib)
{
	char fd_arg[16];
	const char *argv[] = { "/proc/self/exe", "--cmd-task", fd_arg, NULL };
	struct errgroup_cmd cmd = { .argv = argv };
	errgroup *g;

	report_fd = dup(pipe_write_end);
	if (report_fd < 0)
		_exit(1);
	snprintf(fd_arg, sizeof fd_arg, "%d", report_fd);
	if (host_mib > 0) {
		size_t size = host_mib << 20;
		char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			_exit(1);
		madvise(p, size, MADV_NOHUGEPAGE);   /* best effort */
		for (size_t i = 0; i < size; i += 4096)
			p[i] = 1;
	}
	if (c->kind == BARE) {
		for (int i = 0; i < c->tasks; i++) {
			pid_t pid = fork();

			if (pid < 0)
				_exit(1);
			if (pid == 0) {
				setpgid(0, 0);
				fork_grandchild_report_and_block(report_fd);
			}
		}
		for (;;)
			pause();
	}
	g = errgroup_new();
	if (!g)
		_exit(1);
	for (int i = 0; i < c->tasks; i++) {
		int r = c->kind == FN ? errgroup_go(g, fn_task, NULL) : errgroup_go_cmd(g, &cmd);

		if (r < 0) {
			fprintf(stderr, "host: task %d: %s\n", i, strerror(-r));
			_exit(1);
		}
	}
	for (;;)
		pause();
}

/* Reads n pairs from fd; fails if the host dies first or the time runs out. */
static int read_pairs(int fd, int host_pidfd, struct pair *pairs, int n)
{
	size_t want = (size_t)n * sizeof *pairs, got = 0;

	while (got < want) {
		struct pollfd p[2] = { { .fd = fd, .events = POLLIN },
				       { .fd = host_pidfd, .events = POLLIN } };
		ssize_t r;

		if (poll(p, 2, START_TIMEOUT_MS) <= 0 || (p[1].revents && !p[0].revents))
			return -1;
		r = read(fd, (char *)pairs + got, want - got);
		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			return -1;
		}
		got += (size_t)r;
	}
	return 0;
}

static void reap_all(void)
{
	while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
		;
}

/* One round of c; fills c->all_us[c->done] and c->host_us[c->done]. */
static int run_round(struct config *c, size_t host_mib)
{
	int n = c->tasks, watched = 2 * n + 1, ready = 0, pipe_fds[2], host_pidfd, epfd, r = -1;
	struct pair *pairs = calloc((size_t)n, sizeof *pairs);
	int *pidfds = malloc((size_t)2 * (size_t)n * sizeof *pidfds);
	double t0, host_us = -1, last_us = -1;
	pid_t host_pid;

	if (!pairs || !pidfds || pipe2(pipe_fds, O_CLOEXEC) < 0) {
		perror("round");
		exit(1);
	}
	for (int i = 0; i < 2 * n; i++)
		pidfds[i] = -1;
	host_pid = fork();
	if (host_pid < 0) {
		perror("fork");
		exit(1);
	}
	if (host_pid == 0) {
		close(pipe_fds[0]);
		host(c, pipe_fds[1], host_mib);
	}
	close(pipe_fds[1]);
	host_pidfd = pidfd_open(host_pid, 0);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (host_pidfd < 0 || epfd < 0) {
		perror("pidfd_open or epoll_create1");
		exit(1);
	}
	if (read_pairs(pipe_fds[0], host_pidfd, pairs, n) < 0) {
		fprintf(stderr, "%s N=%d: the tasks did not all start\n", kind_names[c->kind], n);
		kill(host_pid, SIGKILL);
		goto out;
	}
	for (int i = 0; i < n; i++) {
		pidfds[2 * i] = pidfd_open(pairs[i].task, 0);
		pidfds[2 * i + 1] = pidfd_open(pairs[i].grandchild, 0);
		if (pidfds[2 * i] < 0 || pidfds[2 * i + 1] < 0) {
			perror("pidfd_open (is RLIMIT_NOFILE high enough?)");
			kill(host_pid, SIGKILL);
			goto out;
		}
	}
	for (int i = -1; i < 2 * n; i++) {
		struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.u32 = (uint32_t)(i + 1) };

		if (epoll_ctl(epfd, EPOLL_CTL_ADD, i < 0 ? host_pidfd : pidfds[i], &ev) < 0) {
			perror("epoll_ctl");
			exit(1);
		}
	}

	t0 = now_us();
	if (c->kind == BARE)
		for (int i = 0; i < n; i++)
			kill(-pairs[i].task, SIGKILL);
	kill(host_pid, SIGKILL);
	while (ready < watched) {
		struct epoll_event events[256];
		int k = epoll_wait(epfd, events, 256, KILL_TIMEOUT_MS);
		double t = now_us();

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			fprintf(stderr, "%s N=%d: %d of %d processes still alive after %d ms\n",
				kind_names[c->kind], n, watched - ready, watched, KILL_TIMEOUT_MS);
			goto out;
		}
		for (int i = 0; i < k; i++)
			if (events[i].data.u32 == 0)
				host_us = t - t0;
		ready += k;
		last_us = t - t0;
	}
	c->all_us[c->done] = last_us;
	c->host_us[c->done] = host_us;
	c->done++;
	r = 0;
out:
	/* Survivors, if any, are ours now: a failed round must not leave them. */
	for (int i = 0; i < 2 * n; i++)
		if (pidfds[i] >= 0) {
			pidfd_send_signal(pidfds[i], SIGKILL, NULL, 0);
			close(pidfds[i]);
		}
	reap_all();
	close(host_pidfd);
	close(epfd);
	close(pipe_fds[0]);
	free(pairs);
	free(pidfds);
	return r;
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The nearest-rank percentile of the n sorted values. */
static double percentile(const double *sorted, int n, double pct)
{
	int rank = (int)(pct / 100.0 * n + 0.999999);

	if (rank < 1)
		rank = 1;
	return sorted[rank - 1];
}

static void print_stats(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, compare_doubles);
	printf(" %9.0f %9.0f %9.0f", percentile(v, n, 50), percentile(v, n, 99), v[n - 1]);
}

static void print_load(const char *when)
{
	char buf[128] = "?";
	FILE *f = fopen("/proc/loadavg", "re");

	if (f) {
		if (!fgets(buf, sizeof buf, f))
			strcpy(buf, "?\n");
		fclose(f);
	}
	printf("load average %s: %s", when, buf);
}

static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		printf("RLIMIT_NOFILE %llu (a round of N tasks needs about 2N in each of the "
		       "host and this process)\n", (unsigned long long)rl.rlim_cur);
}

static int default_rounds(int tasks)
{
	return tasks <= 10 ? 100 : tasks <= 100 ? 50 : 20;
}

int main(int argc, char **argv)
{
	static const int default_tasks[] = { 1, 10, 100, 1000 };
	struct config configs[MAX_CONFIGS];
	int tasks[MAX_CONFIGS], ntasks = 0, nconfigs = 0, rounds = 0, max_rounds = 0;
	bool kinds[KINDS] = { true, true, true };
	size_t host_mib = 0;
	struct utsname u;

	if (argc == 3 && strcmp(argv[1], "--cmd-task") == 0)
		fork_grandchild_report_and_block(atoi(argv[2]));
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
			rounds = atoi(argv[++i]);
		} else if (strcmp(argv[i], "--host-mib") == 0 && i + 1 < argc) {
			host_mib = (size_t)atol(argv[++i]);
		} else if (strcmp(argv[i], "--kinds") == 0 && i + 1 < argc) {
			i++;
			for (int k = 0; k < KINDS; k++)
				kinds[k] = strstr(argv[i], kind_names[k]) != NULL;
		} else if (argv[i][0] != '-' && ntasks < MAX_CONFIGS / 2 && atoi(argv[i]) > 0) {
			tasks[ntasks++] = atoi(argv[i]);
		} else {
			fprintf(stderr, "usage: %s [--rounds R] [--host-mib M] [--kinds fn,cmd,bare] "
				"[N...]\n", argv[0]);
			return 2;
		}
	}
	if (ntasks == 0)
		for (size_t i = 0; i < sizeof default_tasks / sizeof default_tasks[0]; i++)
			tasks[ntasks++] = default_tasks[i];
	for (int k = 0; k < KINDS; k++) {
		if (!kinds[k])
			continue;
		for (int i = 0; i < ntasks; i++) {
			struct config *c = &configs[nconfigs++];

			c->kind = (enum kind)k;
			c->tasks = tasks[i];
			c->rounds = rounds > 0 ? rounds : default_rounds(tasks[i]);
			c->all_us = calloc((size_t)c->rounds, sizeof *c->all_us);
			c->host_us = calloc((size_t)c->rounds, sizeof *c->host_us);
			c->done = 0;
			if (!c->all_us || !c->host_us)
				return 1;
			if (c->rounds > max_rounds)
				max_rounds = c->rounds;
		}
	}

	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
		perror("PR_SET_CHILD_SUBREAPER");
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (uname(&u) == 0)
		printf("kernel %s, %ld cores online\n", u.release, sysconf(_SC_NPROCESSORS_ONLN));
	raise_fd_limit();
	printf("host memory touched: %zu MiB\n", host_mib);
	print_load("before");
	for (int r = 0; r < max_rounds; r++)
		for (int i = 0; i < nconfigs; i++)
			if (r < configs[i].rounds)
				run_round(&configs[i], host_mib);
	print_load("after ");

	printf("\nfrom kill(host, SIGKILL) until every task and grandchild has exited "
	       "(their pidfds readable), in microseconds\n");
	printf("%-4s %5s %6s  %29s  %29s\n", "kind", "N", "rounds",
	       "all 2N dead: median  p99  max", "host dead: median  p99  max");
	for (int i = 0; i < nconfigs; i++) {
		struct config *c = &configs[i];

		printf("%-4s %5d %3d/%-3d ", kind_names[c->kind], c->tasks, c->done, c->rounds);
		if (c->done == 0) {
			printf(" (every round failed)\n");
			continue;
		}
		print_stats(c->all_us, c->done);
		printf("    ");
		print_stats(c->host_us, c->done);
		printf("\n");
	}
	return 0;
}
