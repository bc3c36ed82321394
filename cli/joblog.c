/*
 * joblog.c - what each job did, for programs: --joblog and --json.
 *
 * The job log has GNU parallel's columns, tab-separated, header first, so
 * that tools that read parallel's job logs read ours: Seq, Host (":" for
 * this machine), Starttime (seconds since the epoch), JobRuntime
 * (seconds), Send (bytes sent to its stdin: always 0), Receive (bytes of
 * output captured), Exitval (-1 when killed by a signal, as parallel),
 * Signal, Command.  A line is written and flushed when the job ends, so a
 * log of a run that was cut short still holds every job that ended.
 * --json writes one object per job, every job, to stdout at the end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <sys/wait.h>

#include "cli.h"

FILE *joblog_open(const char *path)
{
	FILE *log = fopen(path, "we");

	if (!log)
		return NULL;
	fputs("Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n", log);
	if (fflush(log) != 0) {
		int saved = errno;

		fclose(log);
		errno = saved;
		return NULL;
	}
	return log;
}

static double epoch_seconds(const struct timespec *t)
{
	return (double)t->tv_sec + (double)t->tv_nsec / 1e9;
}

static int exit_value(int status)
{
	return status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int signal_number(int status)
{
	return status != -1 && WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

/* Errors show at joblog_close, which reports them. */
void joblog_write(FILE *log, const struct job *job)
{
	fprintf(log, "%zu\t:\t%.3f\t%.3f\t0\t%llu\t%d\t%d\t%s\n",
		job->seq, epoch_seconds(&job->started_wall), job->runtime_s,
		job->out.received + job->err.received,
		exit_value(job->status), signal_number(job->status), job->command);
	fflush(log);
}

int joblog_close(FILE *log)
{
	bool failed = ferror(log);

	errno = 0;
	if (fclose(log) != 0 || failed)
		return errno ? -errno : -EIO;
	return 0;
}

/* text as a JSON string.  Bytes from 0x80 up pass as they are: the text
 * is the user's, most likely UTF-8 already. */
static void json_string(FILE *out, const char *text)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", out);
		else if (*p == '\t')
			fputs("\\t", out);
		else if (*p < 0x20)
			fprintf(out, "\\u%04x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

static const char *state_text(const struct job *job)
{
	switch (job->state) {
	case JOB_SUCCEEDED:
		return "succeeded";
	case JOB_FAILED:
		return job->error && job->error->cause == ERRGROUP_TIMEOUT ? "timed out" : "failed";
	case JOB_STOPPED:
		return "stopped";
	case JOB_RUNNING:
	case JOB_WAITING:
		break;
	}
	return "not started";
}

static void json_job(FILE *out, const struct job *job)
{
	bool ended = job->state != JOB_WAITING && job->state != JOB_RUNNING;

	fprintf(out, "{\"seq\":%zu,\"name\":", job->seq);
	json_string(out, job->name);
	fputs(",\"command\":", out);
	json_string(out, job->command);
	fprintf(out, ",\"state\":\"%s\",\"attempts\":%u", state_text(job), job->attempts);
	if (ended) {
		fprintf(out, ",\"start\":%.3f,\"runtime\":%.3f,\"exit\":%d,\"signal\":%d",
			epoch_seconds(&job->started_wall), job->runtime_s,
			exit_value(job->status), signal_number(job->status));
		fprintf(out, ",\"received\":%llu", job->out.received + job->err.received);
	}
	if (ended && job->error) {
		fputs(",\"message\":", out);
		json_string(out, job->error->message);
	}
	fputs("}\n", out);
}

/* Returns 0, or -errno when not all of it reached stdout. */
int json_write(const struct joblist *list)
{
	for (size_t i = 0; i < list->count; i++)
		json_job(stdout, &list->jobs[i]);
	if (fflush(stdout) != 0 || ferror(stdout))
		return errno ? -errno : -EIO;
	return 0;
}
