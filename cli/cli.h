/*
 * cli.h - the errgroup command: what its files share.
 *
 * main.c reads the options, jobs.c turns the input into a list of jobs,
 * run.c runs them as one group through the public API (errgroup.h),
 * output.c carries each job's output to ours, report.c says how it went
 * (the exit status, the failure report), joblog.c writes the job log and
 * the JSON records, progress.c draws --bar; init.c stands in for an init
 * when errgroup is PID 1.  Everything runs on the main thread; the
 * library's own supervisor thread never touches these structs.
 */
#ifndef CLI_H
#define CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>
#include <time.h>

#include <errgroup.h>

/* errgroup's own failures (bad option, unreadable input), as timeout(1)
 * and env(1) use it. */
#define EXIT_USAGE 125

enum output_mode {
	OUTPUT_GROUP,        /* each job's output whole, when it ends */
	OUTPUT_LINE_BUFFER,  /* whole lines, as they come */
	OUTPUT_UNGROUP,      /* the job writes to our stdout and stderr itself */
};

struct options {
	int jobs;                   /* at most this many at once; 0: no limit */
	bool keep_going;
	bool one_for_all;
	unsigned timeout_ms;        /* per attempt; 0: none */
	unsigned grace_ms;          /* SIGTERM to SIGKILL */
	unsigned retries;           /* extra attempts for a failed job */
	enum output_mode output;
	bool tag;
	bool json;
	bool bar;
	bool share_stdin;           /* jobs read our stdin, not /dev/null */
	const char *arg_file;       /* -a; NULL: standard input */
	const char *joblog_path;
	char **names;               /* --name, the i-th names job i + 1 */
	size_t name_count;
	char **command;             /* COMMAND [ARG...], NULL-terminated; NULL
	                               when each input line is a shell command */
	char **args;                /* the words after :::, NULL-terminated;
	                               NULL without ::: (arguments are lines) */
};

/* A job's captured stream: a pipe whose read end is ours. */
struct capture {
	int fd;                     /* read end, non-blocking; -1 when closed */
	int to_fd;                  /* where its text goes: 1 or 2 */
	char *data;                 /* what was read and not yet written out */
	size_t len;
	size_t size;
	unsigned long long received;   /* bytes over every attempt (job log) */
};

enum job_state {
	JOB_WAITING,                /* not started, or waiting for a retry */
	JOB_RUNNING,
	JOB_SUCCEEDED,
	JOB_FAILED,                 /* failed for good, retries spent */
	JOB_STOPPED,                /* ended after the group was canceled */
};

struct job {
	size_t seq;                 /* 1, 2, ... in input order */
	char **argv;                /* what runs, NULL-terminated */
	char *command;              /* argv as one line of text, for people */
	char *argument;             /* what went into COMMAND; NULL for a
	                               shell line */
	const char *name;           /* the --tag prefix: the job's --name, else
	                               its argument, else its line */
	enum job_state state;
	unsigned attempts;          /* started so far */
	struct timespec started;    /* CLOCK_MONOTONIC, last attempt */
	struct timespec started_wall;   /* CLOCK_REALTIME, last attempt */
	double runtime_s;           /* of the last attempt */
	int status;                 /* wait status of the last attempt */
	const struct errgroup_error *error;   /* of the last attempt, NULL on
	                                         success; the group owns it */
	struct capture out;
	struct capture err;
};

struct joblist {
	struct job *jobs;
	size_t count;
};

/* How the run ended, for the report and the exit status. */
struct outcome {
	struct job *decider;        /* the job whose end sets the status: the
	                               first failure, or under --one-for-all the
	                               first job to end; NULL if none did */
	struct job **failures;      /* every job failed for good, in the order
	                               they failed */
	size_t failure_count;
	size_t stopped;             /* jobs that ended because the group was
	                               canceled */
	size_t never_started;
	int signal;                 /* the signal that stopped errgroup, or 0 */
	int error;                  /* errgroup's own failure (-errno), or 0 */
	errgroup *group;            /* the jobs' group, every job reaped; kept
	                               for the errors it owns */
};

/* init.c: returns in the process that runs the command, which is this one
 * unless it is PID 1; PID 1 forks it, reaps and passes on signals. */
void init_if_pid_1(void);

/* main.c */
void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* jobs.c */
int jobs_from_args(struct joblist *list, const struct options *opts);
int jobs_from_lines(struct joblist *list, const struct options *opts, FILE *in,
		    const char *source);
void jobs_name(struct joblist *list, const struct options *opts);
void jobs_free(struct joblist *list);

/* run.c */
int run(struct joblist *list, const struct options *opts, struct outcome *ret);
void outcome_free(struct outcome *o);

/* output.c */
int capture_open(struct capture *c, int to_fd, int *ret_write_end);
int capture_read(struct capture *c, const struct job *job, const struct options *opts);
void capture_drain(struct capture *c, const struct job *job, const struct options *opts);
void capture_release(struct capture *c);
void output_job_ended(struct job *job, const struct options *opts);
int output_error(void);
int output_write(int fd, const char *buf, size_t len);
ssize_t terminal_write(int fd, const char *buf, size_t len);
void output_while_waiting(int fd0, int fd1, void (*fn)(void *), void *arg);

/* report.c */
int exit_status(const struct outcome *o);
void report(const struct joblist *list, const struct options *opts,
	    const struct outcome *o);

/* joblog.c */
struct joblog {
	int fd;
	char *text;                 /* the lines queued, not yet written */
	size_t len;
	int error;                  /* the first error, -errno, or 0 */
};
int joblog_open(struct joblog *log, const char *path);
void joblog_add(struct joblog *log, const struct job *job);
int joblog_flush(struct joblog *log);
int joblog_close(struct joblog *log);
int json_write(const struct joblist *list);

/* progress.c */
void progress_start(bool wanted);
void progress_draw(size_t done, size_t failed, size_t running, size_t total);
void progress_clear(void);
void progress_wrote(int fd, const char *text, size_t len);

#endif
