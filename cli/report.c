/*
 * report.c - how the run went: the exit status, and on stderr a report a
 * person can act on (which job, its command, how it ended, how many others
 * were stopped or never started).
 *
 * The status follows timeout(1) and the shell: a job's own exit status,
 * 128+N for a job killed by signal N, 124 for a job that timed out, 125
 * for errgroup's own failure; the library reports a program it could not
 * execute as an exit with 126 or 127, so those pass through as they are.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "cli.h"

static const char *signal_name(int sig, char buf[static 16])
{
	const char *abbrev = sigabbrev_np(sig);

	if (abbrev)
		snprintf(buf, 16, "SIG%s", abbrev);
	else
		snprintf(buf, 16, "signal %d", sig);
	return buf;
}

static bool timed_out(const struct job *job)
{
	return job->error && job->error->cause == ERRGROUP_TIMEOUT;
}

static int exit_status_of(const struct job *job)
{
	if (timed_out(job))
		return 124;
	if (job->status == -1)
		return EXIT_USAGE;   /* the status was lost: no job's to give */
	if (WIFEXITED(job->status))
		return WEXITSTATUS(job->status);
	if (WIFSIGNALED(job->status))
		return 128 + WTERMSIG(job->status);
	return EXIT_USAGE;
}

int exit_status(const struct outcome *o)
{
	int status = 0;

	if (o->decider)
		status = exit_status_of(o->decider);
	else if (o->signal)
		status = 128 + o->signal;
	if (status == 0 && (o->error || output_error()))
		status = EXIT_USAGE;
	return status;
}

/* How the job's last attempt ended, as the end of a sentence. */
static void describe_end(const struct job *job, const struct options *opts,
			 char *buf, size_t size)
{
	char standard[64], name[16];

	if (timed_out(job)) {
		snprintf(buf, size, "timed out after %gs", opts->timeout_ms / 1000.0);
	} else if (job->status != -1 && WIFSIGNALED(job->status)) {
		snprintf(buf, size, "was killed by %s", signal_name(WTERMSIG(job->status), name));
	} else if (job->status != -1 && WIFEXITED(job->status)) {
		/* The library's message says more than the status when the
		 * program could not be executed ("cannot execute 'frob': ..."). */
		snprintf(standard, sizeof standard, "exited with status %d",
			 WEXITSTATUS(job->status));
		if (job->error && strcmp(job->error->message, standard) != 0)
			snprintf(buf, size, "%s: %s", standard, job->error->message);
		else
			snprintf(buf, size, "%s", standard);
	} else {
		snprintf(buf, size, "%s", job->error ? job->error->message : "ended");
	}
}

static void report_job(const struct job *job, const struct options *opts)
{
	char how[512];

	describe_end(job, opts, how, sizeof how);
	if (job->attempts > 1)
		warn("job %zu (%s) %s, at attempt %u", job->seq, job->command, how,
		     job->attempts);
	else
		warn("job %zu (%s) %s", job->seq, job->command, how);
}

static void report_counts(const struct joblist *list, const struct outcome *o)
{
	char name[16], stopped[48] = "", never[48] = "";

	if (o->signal)
		warn("stopped by %s", signal_name(o->signal, name));
	if (o->failure_count == 0 && o->stopped == 0 && o->never_started == 0)
		return;
	if (o->stopped)
		snprintf(stopped, sizeof stopped, ", %zu stopped", o->stopped);
	if (o->never_started)
		snprintf(never, sizeof never, ", %zu never started", o->never_started);
	warn("%zu of %zu job%s failed%s%s", o->failure_count, list->count,
	     list->count == 1 ? "" : "s", stopped, never);
}

void report(const struct joblist *list, const struct options *opts,
	    const struct outcome *o)
{
	/* Under --one-for-all the job that ended first stopped the others
	 * even when it succeeded: say which. */
	if (o->decider && o->decider->state != JOB_FAILED)
		report_job(o->decider, opts);
	for (size_t i = 0; i < o->failure_count; i++)
		report_job(o->failures[i], opts);
	report_counts(list, o);
	if (output_error())
		warn("cannot write the jobs' output: %s", strerror(-output_error()));
}
