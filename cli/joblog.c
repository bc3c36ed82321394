/*
 * joblog.c - what each job did, for programs: --joblog and --json.
 *
 * The job log has GNU parallel's columns, tab-separated, header first, so
 * that tools that read parallel's job logs read ours: Seq, Host (":" for
 * this machine), Starttime (seconds since the epoch), JobRuntime
 * (seconds), Send (bytes sent to its stdin: always 0), Receive (bytes of
 * output captured), Exitval (-1 when killed by a signal, as parallel),
 * Signal, Command.  A job's line is queued when it ends and written by the
 * loop's next round (run.c), so a log of a run that was cut short still
 * holds every job that ended.  Written as the jobs' output is
 * (output_write): a log on a pipe whose reader pauses never holds up a
 * stop, and one that cannot be written stops the jobs.  A line is never
 * written while another is: a job that ends while a write waits (run.c
 * takes ends then) only queues its line.  --json writes one object per
 * job, every job, to stdout at the end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

static const char header[] =
	"Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n";

int joblog_open(struct joblog *log, const char *path)
{
	int res;

	*log = (struct joblog){ .fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666) };
	if (log->fd < 0)
		return -errno;
	res = output_write(log->fd, header, sizeof header - 1);
	if (res < 0) {
		close(log->fd);
		log->fd = -1;
	}
	return res;
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

/* The command as one column of one line: a tab, a newline or a carriage
 * return in it (a shell line may hold a tab) is written as \t, \n, \r.
 * (An argument's are already quoted away, jobs.c.) */
static void put_command(FILE *out, const char *command)
{
	for (const char *p = command; *p; p++) {
		if (*p == '\t')
			fputs("\\t", out);
		else if (*p == '\n')
			fputs("\\n", out);
		else if (*p == '\r')
			fputs("\\r", out);
		else
			fputc(*p, out);
	}
}

/* Queues the job's line; a failure shows at the next joblog_flush. */
void joblog_add(struct joblog *log, const struct job *job)
{
	char *line = NULL, *grown;
	size_t len;
	FILE *out;

	if (log->error)
		return;
	out = open_memstream(&line, &len);
	if (!out) {
		log->error = -ENOMEM;
		return;
	}
	fprintf(out, "%zu\t:\t%.3f\t%.3f\t0\t%llu\t%d\t%d\t",
		job->seq, epoch_seconds(&job->started_wall), job->runtime_s,
		job->out.received + job->err.received,
		exit_value(job->status), signal_number(job->status));
	put_command(out, job->command);
	fputc('\n', out);
	grown = fclose(out) == 0 ? realloc(log->text, log->len + len) : NULL;
	if (!grown) {
		log->error = -ENOMEM;
		free(line);
		return;
	}
	memcpy(grown + log->len, line, len);
	log->text = grown;
	log->len += len;
	free(line);
}

/* Writes the queued lines.  The writes may take ends, whose lines join a
 * new queue, written in turn.  Returns 0, or the log's first error. */
int joblog_flush(struct joblog *log)
{
	char *text;
	size_t len;
	int res;

	while (!log->error && log->len > 0) {
		text = log->text;
		len = log->len;
		log->text = NULL;
		log->len = 0;
		res = output_write(log->fd, text, len);
		free(text);
		if (res < 0)
			log->error = res;
	}
	return log->error;
}

int joblog_close(struct joblog *log)
{
	int res = joblog_flush(log);

	if (close(log->fd) < 0 && !res)
		res = -errno;
	free(log->text);
	log->fd = -1;
	log->text = NULL;
	return res;
}

/*
 * The length of the valid UTF-8 sequence at p (at least one byte), or 0.
 * Overlong forms, surrogates and code points past U+10FFFF are not valid:
 * a strict JSON reader refuses them.
 */
static size_t utf8_length(const unsigned char *p)
{
	unsigned cp, min;
	size_t n;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2, cp = p[0] & 0x1fu, min = 0x80;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3, cp = p[0] & 0x0fu, min = 0x800;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4, cp = p[0] & 0x07u, min = 0x10000;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3fu);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* text as a JSON string.  JSON text is UTF-8: a byte that is not part of
 * valid UTF-8 (a file name in Latin-1, say) becomes U+FFFD, as in other
 * JSON writers, rather than make the whole line unreadable. */
static void json_string(FILE *out, const char *text)
{
	const unsigned char *p = (const unsigned char *)text;
	size_t n;

	fputc('"', out);
	while (*p) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", out);
		else if (*p == '\t')
			fputs("\\t", out);
		else if (*p < 0x20)
			fprintf(out, "\\u%04x", *p);
		else if ((n = utf8_length(p)) == 0)
			fputs("\\ufffd", out);
		else {
			fwrite(p, 1, n, out);
			p += n;
			continue;
		}
		p++;
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

/* Each job's object is written as the jobs' output is (output_write), so
 * that a stdout a job left non-blocking still takes all of it.  Returns 0,
 * or -errno when not all of it reached stdout. */
int json_write(const struct joblist *list)
{
	size_t len;
	char *text;
	FILE *out;
	int res;

	for (size_t i = 0; i < list->count; i++) {
		text = NULL;
		out = open_memstream(&text, &len);
		if (!out)
			return -ENOMEM;
		json_job(out, &list->jobs[i]);
		res = fclose(out) != 0 ? -ENOMEM : output_write(1, text, len);
		free(text);
		if (res < 0)
			return res;
	}
	return 0;
}
