/*
 * helpers.c - what a helper that watches the children costs the bare fork
 * loop, before any library code: the question behind the cancel mode's
 * design (docs/benchmarks.md, "Session 10").
 *
 * Cancel-on-error must stop the other tasks while the caller is busy
 * elsewhere, so something besides the caller must notice a task's end.
 * Each variant is the bench's bare loop (fork, the child calls _exit(0),
 * waitpid) plus one such helper:
 *   bare      none;
 *   idle      a second thread that never wakes: what glibc's fork pays
 *             once a process has had a second thread;
 *   thread    a thread in epoll_wait over each child's pidfd, which the
 *             loop opens and adds (the library's supervisor thread, less
 *             its reaping and locking);
 *   process   a watcher process, forked once, which gets each child's
 *             pidfd from the loop over a socket (SCM_RIGHTS), watches it
 *             with epoll, and reads /proc/PID/stat when it turns readable
 *             (the wait status of a zombie is there, and the watcher is
 *             not the parent, so it cannot use waitid);
 *   ring      the same watcher, told each child's pid through shared
 *             memory and an eventfd, which opens the pidfd itself.  A
 *             real design must then check, after pidfd_open, that the
 *             parent has not yet reaped the pid (a flag the parent sets
 *             before it reaps); this prototype does not.
 * The watchers only watch: what they would do on a failure costs nothing
 * when every task succeeds.
 *
 * Every run is this program re-executed with --run, in a fresh process; a
 * round runs bare, then each helper, then bare again, and a helper's ratio
 * in the round is its throughput over the mean of the two bare runs.
 *
 * Usage: helpers [--rounds R] [--tasks N]
 *        helpers --run VARIANT C N
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_ROUNDS 5
#define DEFAULT_TASKS 1000
#define MAX_ROUNDS 64
#define WARMUP 100
#define RING_SIZE 4096              /* more than the children in flight */
#define WATCHER_END (-1)            /* in the ring: the loop is done */

enum variant { BARE, IDLE, THREAD, PROCESS, RING, VARIANTS };

static const char *const names[VARIANTS] = {
	[BARE] = "bare", [IDLE] = "idle", [THREAD] = "thread",
	[PROCESS] = "process", [RING] = "ring",
};

struct ring {
	_Atomic unsigned head;
	pid_t pid[RING_SIZE];
};

static int epoll_fd = -1;           /* THREAD: the thread's set */
static int sock[2] = { -1, -1 };    /* PROCESS: loop -> watcher */
static int event_fd = -1;           /* RING: wakes the watcher */
static struct ring *ring;

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int pidfd_open(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

static void *idle_thread(void *unused)
{
	(void)unused;
	for (;;)
		pause();
	return NULL;
}

/* The loop closes each pidfd after waitpid; one-shot events fire once. */
static void *epoll_thread(void *unused)
{
	struct epoll_event ev[16];

	(void)unused;
	for (;;)
		epoll_wait(epoll_fd, ev, 16, -1);
	return NULL;
}

/* What the watcher reads when a child's pidfd turns readable: the wait
 * status is field 52 of the zombie's stat, counted from the last ')' as
 * the command name may hold anything.  -1 if it cannot tell. */
static int read_status(pid_t pid)
{
	char path[64], text[1024], *p;
	ssize_t n;
	int fd, field = 2;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, text, sizeof text - 1);
	close(fd);
	if (n <= 0)
		return -1;
	text[n] = '\0';
	p = strrchr(text, ')');
	for (; p && *p && field < 52; p++)
		if (*p == ' ')
			field++;
	return p && *p ? atoi(p) : -1;
}

static void watch_pidfd(int epfd, pid_t pid, int pidfd)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT,
				  .data.u64 = (uint64_t)(uint32_t)pid << 32 | (uint32_t)pidfd };

	if (epoll_ctl(epfd, EPOLL_CTL_ADD, pidfd, &ev) < 0)
		close(pidfd);
}

/* Takes the pidfds the loop sent; false once it has closed its end. */
static int receive_pidfds(void)
{
	for (;;) {
		char control[CMSG_SPACE(sizeof(int))];
		pid_t pid;
		struct iovec iov = { &pid, sizeof pid };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
				      .msg_control = control, .msg_controllen = sizeof control };
		struct cmsghdr *cmsg;
		ssize_t n;
		int pidfd;

		n = recvmsg(sock[1], &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n == 0)
			return 0;
		if (n < 0)
			return 1;
		cmsg = CMSG_FIRSTHDR(&msg);
		if (!cmsg || cmsg->cmsg_type != SCM_RIGHTS)
			continue;
		memcpy(&pidfd, CMSG_DATA(cmsg), sizeof pidfd);
		watch_pidfd(epoll_fd, pid, pidfd);
	}
}

/* Opens a pidfd for each pid the loop put in the ring; false at the end. */
static int take_ring(unsigned *tail)
{
	uint64_t count;
	unsigned head;

	if (read(event_fd, &count, sizeof count) < 0)
		return 1;
	head = atomic_load(&ring->head);
	for (; *tail != head; (*tail)++) {
		pid_t pid = ring->pid[*tail % RING_SIZE];
		int pidfd;

		if (pid == WATCHER_END)
			return 0;
		pidfd = pidfd_open(pid);
		if (pidfd >= 0)
			watch_pidfd(epoll_fd, pid, pidfd);
	}
	return 1;
}

/* Exits with the number of children whose status it read as other than
 * 0 (at most 255), so that the run can check what the watcher reads. */
static _Noreturn void watcher(enum variant v)
{
	int failed = 0, status;
	struct epoll_event ev[16];
	struct epoll_event source = { .events = EPOLLIN, .data.u64 = UINT64_MAX };
	unsigned tail = 0;

	if (v == PROCESS)
		close(sock[0]);     /* or the end of the loop's messages never comes */
	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_fd < 0 ||
	    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, v == PROCESS ? sock[1] : event_fd, &source) < 0)
		_exit(1);
	for (;;) {
		int n = epoll_wait(epoll_fd, ev, 16, -1);

		for (int i = 0; i < n; i++) {
			if (ev[i].data.u64 == UINT64_MAX) {
				if (!(v == PROCESS ? receive_pidfds() : take_ring(&tail)))
					_exit(failed);
				continue;
			}
			status = read_status((pid_t)(ev[i].data.u64 >> 32));
			/* A status read after the parent reaped may be a
			 * stranger's; the parent has then seen the end itself. */
			if (syscall(SYS_pidfd_send_signal, (int)(uint32_t)ev[i].data.u64, 0,
				    NULL, 0) == 0 && status != 0 && failed < 255)
				failed++;
			close((int)(uint32_t)ev[i].data.u64);
		}
	}
}

static pid_t start_helper(enum variant v)
{
	pthread_t thread;
	pid_t pid;

	switch (v) {
	case IDLE:
		if (pthread_create(&thread, NULL, idle_thread, NULL) != 0)
			die("pthread_create");
		return 0;
	case THREAD:
		epoll_fd = epoll_create1(EPOLL_CLOEXEC);
		if (epoll_fd < 0 || pthread_create(&thread, NULL, epoll_thread, NULL) != 0)
			die("thread");
		return 0;
	case PROCESS:
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sock) < 0)
			die("socketpair");
		break;
	case RING:
		ring = mmap(NULL, sizeof *ring, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		event_fd = eventfd(0, EFD_CLOEXEC);
		if (ring == MAP_FAILED || event_fd < 0)
			die("ring");
		break;
	default:
		return 0;
	}
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0)
		watcher(v);
	if (v == PROCESS)
		close(sock[1]);
	return pid;
}

static void ring_push(pid_t pid)
{
	unsigned head = atomic_load(&ring->head);
	uint64_t one = 1;

	ring->pid[head % RING_SIZE] = pid;
	atomic_store(&ring->head, head + 1);
	if (write(event_fd, &one, sizeof one) < 0)
		die("write eventfd");
}

static void send_pidfd(pid_t pid, int pidfd)
{
	char control[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { &pid, sizeof pid };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = control, .msg_controllen = sizeof control };
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);

	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cmsg), &pidfd, sizeof pidfd);
	if (sendmsg(sock[0], &msg, 0) < 0)
		die("sendmsg");
}

/* What the loop does for each child it forks, besides the fork. */
static void hand_over(enum variant v, pid_t pid, int *pidfds)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT };
	int pidfd;

	switch (v) {
	case THREAD:
		pidfd = pidfd_open(pid);
		if (pidfd < 0)
			die("pidfd_open");
		ev.data.fd = pidfd;
		if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, pidfd, &ev) < 0)
			die("epoll_ctl");
		pidfds[pid % RING_SIZE] = pidfd;
		break;
	case PROCESS:
		pidfd = pidfd_open(pid);
		if (pidfd < 0)
			die("pidfd_open");
		send_pidfd(pid, pidfd);
		close(pidfd);
		break;
	case RING:
		ring_push(pid);
		break;
	default:
		break;
	}
}

/* One run: tasks children (after a warm-up) at most concurrency at once;
 * tasks per second. */
static double run(enum variant v, int concurrency, int tasks)
{
	static int pidfds[RING_SIZE];
	int running = 0, started = 0, ended = 0, total = tasks + WARMUP;
	pid_t watcher_pid = start_helper(v);
	double start = now_s();

	while (ended < total) {
		pid_t pid;

		while (running < concurrency && started < total) {
			pid = fork();
			if (pid < 0)
				die("fork");
			if (pid == 0)
				_exit(0);
			hand_over(v, pid, pidfds);
			started++;
			running++;
		}
		do
			pid = waitpid(-1, NULL, 0);
		while (pid < 0 && errno == EINTR);
		if (pid < 0)
			die("waitpid");
		if (pid == watcher_pid)
			die("watcher died");
		if (v == THREAD)
			close(pidfds[pid % RING_SIZE]);
		running--;
		if (++ended == WARMUP)
			start = now_s();
	}
	start = (double)tasks / (now_s() - start);
	if (v == PROCESS)
		close(sock[0]);
	if (v == RING)
		ring_push(WATCHER_END);
	if (watcher_pid > 0) {
		int status;

		if (waitpid(watcher_pid, &status, 0) < 0 || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0) {
			fprintf(stderr, "helpers: the watcher saw a status other than 0\n");
			exit(1);
		}
	}
	return start;
}

/* Runs this program with --run in a fresh process; its tasks per second. */
static double measure(const char *self, enum variant v, int concurrency, int tasks)
{
	char c[16], n[16], line[64] = "";
	int out[2], status;
	ssize_t len;
	pid_t pid;

	snprintf(c, sizeof c, "%d", concurrency);
	snprintf(n, sizeof n, "%d", tasks);
	if (pipe2(out, O_CLOEXEC) < 0)
		die("pipe2");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		dup2(out[1], STDOUT_FILENO);
		execl(self, self, "--run", names[v], c, n, (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	len = read(out[0], line, sizeof line - 1);
	close(out[0]);
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
	    len <= 0) {
		fprintf(stderr, "helpers: the %s run failed\n", names[v]);
		exit(1);
	}
	line[len] = '\0';
	return strtod(line, NULL);
}

static int compare(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static int usage(void)
{
	fprintf(stderr, "usage: helpers [--rounds R] [--tasks N]\n"
			"       helpers --run bare|idle|thread|process|ring C N\n");
	return 2;
}

int main(int argc, char **argv)
{
	static double ratio[VARIANTS][2][MAX_ROUNDS], speed[VARIANTS][2][MAX_ROUNDS];
	int rounds = DEFAULT_ROUNDS, tasks = DEFAULT_TASKS;

	if (argc == 5 && !strcmp(argv[1], "--run")) {
		for (int v = 0; v < VARIANTS; v++)
			if (!strcmp(argv[2], names[v])) {
				printf("%.1f\n", run(v, atoi(argv[3]), atoi(argv[4])));
				return 0;
			}
		return usage();
	}
	for (int i = 1; i < argc; i++) {
		if (i + 1 < argc && !strcmp(argv[i], "--rounds"))
			rounds = atoi(argv[++i]);
		else if (i + 1 < argc && !strcmp(argv[i], "--tasks"))
			tasks = atoi(argv[++i]);
		else
			return usage();
	}
	if (rounds < 1 || rounds > MAX_ROUNDS || tasks < 1)
		return usage();

	printf("helpers: %d rounds of bare, idle, thread, process, ring, bare; %d tasks a run\n",
	       rounds, tasks);
	for (int r = 0; r < rounds; r++)
		for (int c = 0; c < 2; c++) {
			double first = measure("/proc/self/exe", BARE, c + 1, tasks), bare;
			double got[VARIANTS];

			for (int v = IDLE; v < VARIANTS; v++)
				got[v] = measure("/proc/self/exe", v, c + 1, tasks);
			bare = (first + measure("/proc/self/exe", BARE, c + 1, tasks)) / 2;
			speed[BARE][c][r] = bare;
			for (int v = IDLE; v < VARIANTS; v++) {
				speed[v][c][r] = got[v];
				ratio[v][c][r] = got[v] / bare;
			}
		}
	printf("\n%-8s %2s %10s  %s\n", "variant", "C", "tasks/s", "ratio to bare: median [min-max]");
	for (int c = 0; c < 2; c++)
		for (int v = 0; v < VARIANTS; v++) {
			qsort(speed[v][c], (size_t)rounds, sizeof(double), compare);
			printf("%-8s %2d %10.0f", names[v], c + 1, speed[v][c][rounds / 2]);
			if (v != BARE) {
				qsort(ratio[v][c], (size_t)rounds, sizeof(double), compare);
				printf("  %.2f [%.2f-%.2f]", ratio[v][c][rounds / 2], ratio[v][c][0],
				       ratio[v][c][rounds - 1]);
			}
			printf("\n");
		}
	return 0;
}
