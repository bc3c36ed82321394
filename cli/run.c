/*
 * run.c - the jobs as one group: start them, watch them, stop them.
 *
 * One loop on the main thread polls three kinds of fd: the group's
 * (errgroup_fd: readable when a task has ended), a signalfd for SIGINT,
 * SIGTERM, SIGHUP and the stop signals (SIGTSTP, SIGTTIN, SIGTTOU), and
 * the output pipes of every running job.  Jobs start with
 * errgroup_try_go_cmd, never the blocking errgroup_go_cmd: the loop must
 * go on reading the running jobs' output (a job blocked on a full pipe
 * would never end).  It counts -j itself and starts the next job when it
 * has reaped one.
 *
 * The group's cancel-on-error stays off: a failed attempt that will be
 * retried must not stop the others.  The loop decides itself when to call
 * errgroup_cancel: a job failed for good (unless --keep-going), any job
 * ended (--one-for-all), a signal came, or our output cannot be written.
 * From then on nothing starts, and the loop runs until every started job
 * has been reaped.  Writing a job's output may wait for its reader; ends
 * and signals are still taken then (act_on_events_now), so that the
 * decision to stop is never late.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "cli.h"

/* A job's end, and when we learned of it. */
struct ended {
	struct errgroup_exit exit;
	struct timespec at;         /* CLOCK_MONOTONIC */
};

struct run {
	errgroup *g;
	int group_fd;               /* errgroup_fd(g), the group's own */
	int signal_fd;
	sigset_t mask;              /* the signal mask errgroup started with */
	int dev_null;               /* the jobs' stdin */
	struct joblog joblog;       /* fd -1 without --joblog */
	const struct options *opts;
	struct joblist *list;
	struct outcome *outcome;
	size_t next;                /* the first job never started */
	struct job **retries;       /* failed attempts to run again, a stack */
	size_t retry_count;
	struct job **running;       /* the running jobs, in no order */
	size_t running_count;
	struct job **by_task;       /* task index -> its job */
	size_t by_task_size;
	size_t tasks;               /* tasks started, over every attempt */
	size_t done;                /* jobs ended for good, for --bar */
	bool stopping;              /* the group was canceled: start nothing */
	struct ended *ended;        /* ends taken while our output waited, in
	                               order; at most one per running job, and
	                               one we could not follow */
	size_t ended_count;
	struct pollfd *fds;         /* the poll set, rebuilt each round */
	struct capture **fd_capture;   /* fds[i]'s pipe, NULL for ours */
	struct job **fd_job;
	size_t fds_size;
};

static double seconds_between(const struct timespec *from, const struct timespec *to)
{
	return (double)(to->tv_sec - from->tv_sec) + (double)(to->tv_nsec - from->tv_nsec) / 1e9;
}

static void draw_progress(const struct run *r)
{
	progress_draw(r->done, r->outcome->failure_count, r->running_count, r->list->count);
}

static void finish(struct run *r, struct job *job, enum job_state state);
static void act_on_events_now(void *arg);

/* Cancels the group: SIGTERM to every running job's process group, SIGKILL
 * after the grace period.  A job waiting for a retry will not get it: its
 * failed attempt is its end. */
static void stop(struct run *r)
{
	if (r->stopping)
		return;
	r->stopping = true;
	errgroup_cancel(r->g);
	while (r->retry_count > 0)
		finish(r, r->retries[--r->retry_count], JOB_FAILED);
}

static struct job *peek_next(const struct run *r)
{
	if (r->retry_count > 0)
		return r->retries[r->retry_count - 1];
	if (r->next < r->list->count)
		return &r->list->jobs[r->next];
	return NULL;
}

static void pop_next(struct run *r)
{
	if (r->retry_count > 0)
		r->retry_count--;
	else
		r->next++;
}

static int grow_by_task(struct run *r, size_t need)
{
	struct job **grown;
	size_t size;

	if (need <= r->by_task_size)
		return 0;
	size = r->by_task_size ? r->by_task_size : 64;
	while (size < need)
		size *= 2;
	grown = reallocarray(r->by_task, size, sizeof *grown);
	if (!grown)
		return -ENOMEM;
	/* NULL: no job runs as that task. */
	memset(grown + r->by_task_size, 0, (size - r->by_task_size) * sizeof *grown);
	r->by_task = grown;
	r->by_task_size = size;
	return 0;
}

static void close_write_ends(const int stdio[3])
{
	if (stdio[1] >= 0)
		close(stdio[1]);
	if (stdio[2] >= 0)
		close(stdio[2]);
}

/* Starts one attempt of job.  Returns 0, or -errno with nothing started. */
static int start_one(struct run *r, struct job *job)
{
	int stdio[3] = { r->opts->share_stdin ? -1 : r->dev_null, -1, -1 };
	struct errgroup_cmd cmd = {
		.argv = (const char *const *)job->argv,
		.stdio = stdio,
	};
	int task, res;

	/* Task indexes count up from 0, one per task started: make room for
	 * the next one before it runs, while failing is still harmless. */
	if (grow_by_task(r, r->tasks + 1) < 0)
		return -ENOMEM;
	if (r->opts->output != OUTPUT_UNGROUP) {
		res = capture_open(&job->out, 1, &stdio[1]);
		if (res == 0)
			res = capture_open(&job->err, 2, &stdio[2]);
		if (res < 0)
			goto fail;
	}
	clock_gettime(CLOCK_MONOTONIC, &job->started);
	clock_gettime(CLOCK_REALTIME, &job->started_wall);
	res = task = errgroup_try_go_cmd(r->g, &cmd);
	if (res < 0)
		goto fail;
	/* The job holds the write ends now; ours would keep its pipes open
	 * past its end. */
	close_write_ends(stdio);
	if (grow_by_task(r, (size_t)task + 1) < 0) {
		/* Not a task we could follow: stop all rather than lose it. */
		r->outcome->error = -ENOMEM;
		stop(r);
		return 0;
	}
	r->by_task[task] = job;
	r->running[r->running_count++] = job;
	r->tasks++;
	job->state = JOB_RUNNING;
	job->attempts++;
	return 0;
fail:
	close_write_ends(stdio);
	capture_release(&job->out);
	capture_release(&job->err);
	return res;
}

/* Errors that pass when a running job ends and frees what it held. */
static bool is_transient(int res)
{
	return res == -EAGAIN || res == -EMFILE || res == -ENFILE || res == -ENOMEM;
}

/* Whether -j allows one more.  Counted here, not by the group's limit:
 * the group frees a slot as soon as a task ends, before this loop has
 * reaped it, and a job started in between would start after a failure
 * that must stop everything. */
static bool below_limit(const struct run *r)
{
	return r->opts->jobs == 0 || r->running_count < (size_t)r->opts->jobs;
}

/* Whether a signal came or a job ended, without waiting. */
static bool events_pending(const struct run *r)
{
	struct pollfd p[2] = {
		{ .fd = r->signal_fd, .events = POLLIN },
		{ .fd = r->group_fd, .events = POLLIN },
	};

	return poll(p, 2, 0) > 0;
}

/* Starts jobs until the limit, or a shortage that the end of a running
 * job will lift.  Each start is a fork, and hundreds of them (-j 0) take
 * seconds: a signal or a failure meanwhile stops the starts at once. */
static void start_jobs(struct run *r)
{
	struct job *job;
	int res;

	while (!r->stopping && below_limit(r) && (job = peek_next(r))) {
		res = start_one(r, job);
		if (res == 0) {
			pop_next(r);
			if (events_pending(r))
				act_on_events_now(r);
			continue;
		}
		if (is_transient(res) && r->running_count > 0)
			return;
		/* Nothing runs whose end could help: give up, as a failure of
		 * errgroup itself. */
		warn("cannot start job %zu (%s): %s", job->seq, job->command, strerror(-res));
		r->outcome->error = res;
		stop(r);
	}
}

static void forget_running(struct run *r, const struct job *job)
{
	for (size_t i = 0; i < r->running_count; i++)
		if (r->running[i] == job) {
			r->running[i] = r->running[--r->running_count];
			return;
		}
}

/* Whether a job that ends for good in state stops the group. */
static bool stops_the_group(const struct run *r, enum job_state state)
{
	return r->opts->one_for_all || (state == JOB_FAILED && !r->opts->keep_going);
}

/* job ended for good in state. */
static void finish(struct run *r, struct job *job, enum job_state state)
{
	struct outcome *o = r->outcome;

	job->state = state;
	r->done++;
	if (r->joblog.fd >= 0)
		joblog_add(&r->joblog, job);
	if (state == JOB_FAILED)
		o->failures[o->failure_count++] = job;
	if (state == JOB_STOPPED)
		o->stopped++;
	/* After a cancel, jobs end because of it: none of them decides. */
	if (r->stopping)
		return;
	if (r->opts->one_for_all || state == JOB_FAILED) {
		if (!o->decider)
			o->decider = job;
		if (stops_the_group(r, state))
			stop(r);
	}
}

/* The job that ran as the task that ended, or NULL. */
static struct job *job_of(const struct run *r, const struct errgroup_exit *exit)
{
	if (exit->task < 0 || (size_t)exit->task >= r->by_task_size)
		return NULL;
	return r->by_task[exit->task];
}

/* How this end leaves its job: JOB_WAITING when it is to run again. */
static enum job_state end_state(const struct run *r, const struct job *job,
				const struct errgroup_exit *exit)
{
	if (!exit->error)
		return JOB_SUCCEEDED;
	if (exit->error->cause == ERRGROUP_CANCELED)
		return JOB_STOPPED;
	if (!r->stopping && job->attempts <= r->opts->retries)
		return JOB_WAITING;
	return JOB_FAILED;
}

/* The job's runtime ends at, when its end was taken: not later, when its
 * turn came after output that waited for its reader. */
static void on_task_end(struct run *r, const struct errgroup_exit *exit,
			const struct timespec *at)
{
	enum job_state state;
	struct job *job = job_of(r, exit);

	if (!job)
		return;   /* a task we could not follow (see start_one) */
	r->by_task[exit->task] = NULL;
	job->runtime_s = seconds_between(&job->started, at);
	forget_running(r, job);
	capture_drain(&job->out, job, r->opts);
	capture_drain(&job->err, job, r->opts);
	job->status = exit->status;
	job->error = exit->error;
	/* Decided before the output is written, which may wait for its
	 * reader: a failure stops the others now. */
	state = end_state(r, job, exit);
	if (state == JOB_WAITING) {
		job->state = JOB_WAITING;
		r->retries[r->retry_count++] = job;
	} else
		finish(r, job, state);
	output_job_ended(job, r->opts);
}

/* Ends taken while our output waited are older than what the group still
 * holds, and taking one may add more. */
static int reap_all(struct run *r)
{
	struct errgroup_exit exit;
	struct timespec now;
	int res;

	do {
		for (size_t i = 0; i < r->ended_count; i++)
			on_task_end(r, &r->ended[i].exit, &r->ended[i].at);
		r->ended_count = 0;
		res = errgroup_reap(r->g, &exit);
		if (res > 0) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			on_task_end(r, &exit, &now);
		}
	} while (res > 0 || r->ended_count > 0);
	return res;
}

/*
 * Ctrl-Z: the terminal's SIGTSTP reaches errgroup's process group, not the
 * jobs', so errgroup stops them (SIGSTOP, to each job's whole group)
 * before it stops itself with the signal it got, which the shell reports
 * as usual.  So for the terminal's stops of a background process group:
 * SIGTTOU, for errgroup's own write under `stty tostop` (output.c
 * terminal_write) or another process's of its group (a pipeline's
 * `| tee /dev/tty`), and SIGTTIN, for a read (errgroup reads the terminal
 * only before any job starts, but a pager in its pipeline may).
 * Blocked, that signal waits until it is unblocked and then acts at once.
 * On SIGCONT (fg or bg) the jobs go on too; so they do at once when the
 * kernel drops the stop, as it drops a terminal stop signal in a process
 * group that no shell controls (an orphaned one).
 */
static void suspend(struct run *r, int sig)
{
	sigset_t stop;

	errgroup_signal(r->g, SIGSTOP);
	progress_clear();
	sigemptyset(&stop);
	sigaddset(&stop, sig);
	kill(getpid(), sig);
	pthread_sigmask(SIG_UNBLOCK, &stop, NULL);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	errgroup_signal(r->g, SIGCONT);
}

static bool is_stop_signal(int sig)
{
	return sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

/* Reads the signals that came; the first that stops the jobs is the
 * outcome's.  True if any of those came. */
static bool take_signals(struct run *r)
{
	struct signalfd_siginfo info;
	bool any = false;

	while (read(r->signal_fd, &info, sizeof info) == (ssize_t)sizeof info) {
		if (is_stop_signal((int)info.ssi_signo)) {
			suspend(r, (int)info.ssi_signo);
			continue;
		}
		if (!r->outcome->signal)
			r->outcome->signal = (int)info.ssi_signo;
		any = true;
	}
	return any;
}

/* A signal that comes while the jobs are being stopped already (a second
 * Ctrl-C, or one after a failure) is impatience: no more grace. */
static void on_signal(struct run *r)
{
	bool stopping = r->stopping;

	if (!take_signals(r))
		return;
	if (stopping)
		errgroup_signal(r->g, SIGKILL);
	stop(r);
}

/* A signal or a job's end while the loop is busy elsewhere, while our
 * output waits for its reader (output.c) or between two starts: what
 * stops the group stops it at once.  The ends are kept for reap_all,
 * which writes their output: one job's text never lands inside
 * another's.  Each end taken leaves the group's fd, which so turns
 * unreadable once all are. */
static void act_on_events_now(void *arg)
{
	struct run *r = arg;
	struct errgroup_exit exit;
	enum job_state state;
	struct job *job;

	on_signal(r);
	while (r->ended_count < r->list->count + 1 && errgroup_reap(r->g, &exit) > 0) {
		r->ended[r->ended_count].exit = exit;
		clock_gettime(CLOCK_MONOTONIC, &r->ended[r->ended_count++].at);
		job = job_of(r, &exit);
		if (r->stopping || !job)
			continue;
		state = end_state(r, job, &exit);
		if (state != JOB_WAITING && stops_the_group(r, state)) {
			/* finish() names no decider after the stop. */
			if (!r->outcome->decider)
				r->outcome->decider = job;
			stop(r);
		}
	}
}

static int grow_poll_set(struct run *r, size_t need)
{
	struct capture **captures;
	struct pollfd *fds;
	struct job **jobs;

	if (need <= r->fds_size)
		return 0;
	fds = reallocarray(r->fds, need, sizeof *fds);
	if (fds)
		r->fds = fds;
	captures = reallocarray(r->fd_capture, need, sizeof *captures);
	if (captures)
		r->fd_capture = captures;
	jobs = reallocarray(r->fd_job, need, sizeof *jobs);
	if (jobs)
		r->fd_job = jobs;
	if (!fds || !captures || !jobs)
		return -ENOMEM;
	r->fds_size = need;
	return 0;
}

static void add_fd(struct run *r, size_t *n, int fd, struct capture *c, struct job *job)
{
	r->fds[*n] = (struct pollfd){ .fd = fd, .events = POLLIN };
	r->fd_capture[*n] = c;
	r->fd_job[*n] = job;
	(*n)++;
}

static size_t build_poll_set(struct run *r)
{
	size_t n = 0;

	add_fd(r, &n, r->signal_fd, NULL, NULL);
	add_fd(r, &n, r->group_fd, NULL, NULL);
	for (size_t i = 0; i < r->running_count; i++) {
		struct job *job = r->running[i];

		if (job->out.fd >= 0)
			add_fd(r, &n, job->out.fd, &job->out, job);
		if (job->err.fd >= 0)
			add_fd(r, &n, job->err.fd, &job->err, job);
	}
	return n;
}

/* One round: wait for something, then read the pipes before reaping, so
 * that no fd in the set is closed under the loop by a reap. */
static int wait_once(struct run *r)
{
	/* Ends already taken (act_on_events_now) wait for no event. */
	int timeout_ms = r->ended_count ? 0 : r->opts->bar ? 1000 : -1;
	size_t n;
	int res;

	if (grow_poll_set(r, 2 + 2 * r->running_count) < 0)
		return -ENOMEM;
	n = build_poll_set(r);
	if (poll(r->fds, n, timeout_ms) < 0)
		return errno == EINTR ? 0 : -errno;
	for (size_t i = 2; i < n; i++)
		if (r->fds[i].revents)
			capture_read(r->fd_capture[i], r->fd_job[i], r->opts);
	if (r->fds[0].revents)
		on_signal(r);
	if (r->fds[1].revents || r->ended_count) {
		res = reap_all(r);
		if (res < 0)
			return res;
	}
	draw_progress(r);
	return 0;
}

static int loop(struct run *r)
{
	int res;

	for (;;) {
		/* Output that cannot be written (its reader left: EPIPE) is
		 * lost: stop rather than run every job into the void.  So is a
		 * job log that cannot be (teardown reports it). */
		if (r->joblog.fd >= 0 && joblog_flush(&r->joblog) < 0)
			stop(r);
		if (output_error())
			stop(r);
		start_jobs(r);
		if (r->running_count == 0 && (r->stopping || !peek_next(r)))
			return 0;
		res = wait_once(r);
		if (res < 0) {
			warn("cannot wait for the jobs: %s", strerror(-res));
			return res;
		}
	}
}

/*
 * SIGINT, SIGTERM, SIGHUP and the stop signals come through a signalfd.
 * They are blocked before the group exists, so that its supervisor thread,
 * which inherits the mask, never takes one; the jobs start with an empty
 * mask.  One that errgroup was started with ignored (nohup, a background
 * command of a script) stays ignored: blocked, it would be queued all the
 * same.  A terminal takes a blocked SIGTTOU for an ignored one and lets
 * errgroup write from the background under `stty tostop`: output.c lets
 * it through while it writes there (terminal_write).  The mask errgroup
 * started with is kept in *mask, to go back to once the jobs are done
 * (teardown).
 */
static int open_signal_fd(sigset_t *mask)
{
	static const int taken[] = { SIGINT, SIGTERM, SIGHUP, SIGTSTP, SIGTTIN, SIGTTOU };
	struct sigaction old;
	sigset_t set;
	int fd;

	sigemptyset(&set);
	for (size_t i = 0; i < sizeof taken / sizeof taken[0]; i++)
		if (sigaction(taken[i], NULL, &old) < 0 || old.sa_handler != SIG_IGN)
			sigaddset(&set, taken[i]);
	if (sigprocmask(SIG_BLOCK, &set, mask) < 0)
		return -errno;
	fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	return fd < 0 ? -errno : fd;
}

static int group_new(struct run *r)
{
	const struct options *opts = r->opts;

	r->g = errgroup_new();
	if (!r->g)
		return -errno;
	errgroup_set_grace_ms(r->g, opts->grace_ms);
	if (opts->timeout_ms > 0)
		errgroup_set_timeout_ms(r->g, opts->timeout_ms);
	r->group_fd = errgroup_fd(r->g);
	return r->group_fd < 0 ? r->group_fd : 0;
}

/* Each failure is reported here, as it names what could not be set up. */
static int setup(struct run *r)
{
	size_t count = r->list->count;
	int res;

	/* A service manager that takes notifications from any process of the
	 * service (systemd's NotifyAccess=all) would take a job's READY=1 or
	 * STOPPING=1 for errgroup's own, and errgroup notifies nothing itself.
	 * (LISTEN_PID and WATCHDOG_PID name errgroup, so jobs ignore those.)
	 * Unset while errgroup is still one thread: the jobs get environ. */
	unsetenv("NOTIFY_SOCKET");
	/* Before the signals are blocked: opening a fifo waits for its reader,
	 * and writing the header may wait too, and a Ctrl-C then must end
	 * errgroup, as it ends a shell's >fifo.  No job has started yet. */
	if (r->opts->joblog_path) {
		res = joblog_open(&r->joblog, r->opts->joblog_path);
		if (res < 0) {
			warn("cannot write the job log %s: %s", r->opts->joblog_path,
			     strerror(-res));
			return res;
		}
	}
	res = r->signal_fd = open_signal_fd(&r->mask);
	if (res < 0) {
		warn("cannot catch signals: %s", strerror(-res));
		return res;
	}
	r->dev_null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (r->dev_null < 0) {
		warn("cannot open /dev/null: %s", strerror(errno));
		return -errno;
	}
	/* Each job is at most once in each of these. */
	r->outcome->failures = calloc(count + 1, sizeof *r->outcome->failures);
	r->retries = calloc(count + 1, sizeof *r->retries);
	r->running = calloc(count + 1, sizeof *r->running);
	r->ended = calloc(count + 1, sizeof *r->ended);
	if (!r->outcome->failures || !r->retries || !r->running || !r->ended) {
		warn("%s", strerror(ENOMEM));
		return -ENOMEM;
	}
	res = group_new(r);
	if (res < 0) {
		warn("cannot make the group: %s", strerror(-res));
		return res;
	}
	output_while_waiting(r->signal_fd, r->group_fd, act_on_events_now, r);
	return 0;
}

/* Leaves the group to the outcome: its errors are the jobs' errors. */
static void teardown(struct run *r)
{
	r->outcome->group = r->g;
	output_while_waiting(-1, -1, NULL, NULL);
	/* The jobs are done: a signal now ends errgroup at once, as any
	 * program, while it writes the rest of the job log, the report and
	 * --json to readers that may not read.  Blocked, it would wait, and
	 * then be lost. */
	if (r->signal_fd >= 0) {
		close(r->signal_fd);
		sigprocmask(SIG_SETMASK, &r->mask, NULL);
	}
	if (r->joblog.fd >= 0) {
		int res = joblog_close(&r->joblog);

		if (res < 0) {
			warn("cannot write the job log %s: %s", r->opts->joblog_path,
			     strerror(-res));
			if (!r->outcome->error)
				r->outcome->error = res;
		}
	}
	if (r->dev_null >= 0)
		close(r->dev_null);
	free(r->retries);
	free(r->running);
	free(r->ended);
	free(r->by_task);
	free(r->fds);
	free(r->fd_capture);
	free(r->fd_job);
}

int run(struct joblist *list, const struct options *opts, struct outcome *ret)
{
	struct run r = {
		.group_fd = -1,
		.signal_fd = -1,
		.dev_null = -1,
		.joblog = { .fd = -1 },
		.opts = opts,
		.list = list,
		.outcome = ret,
	};
	int res;

	*ret = (struct outcome){ 0 };
	res = setup(&r);
	if (res < 0) {
		teardown(&r);
		return res;
	}
	progress_start(opts->bar);
	res = loop(&r);
	if (res < 0 && !ret->error)
		ret->error = res;
	progress_clear();
	for (size_t i = 0; i < list->count; i++)
		if (list->jobs[i].state == JOB_WAITING)
			ret->never_started++;
	teardown(&r);
	return 0;
}

void outcome_free(struct outcome *o)
{
	free(o->failures);
	errgroup_free(o->group);
}
