/*
 * progress.c - --bar: one line on stderr, redrawn in place, saying how
 * many jobs are done, failed, running, out of how many, and for how long.
 *
 * Only on a terminal: in a log file the redraws would be noise.  The line
 * is erased before any output is written (output.c calls progress_clear)
 * and drawn again after, so that it never ends up in the middle of a job's
 * text.  Writes to the terminal are best effort: a progress line that
 * cannot be drawn is not worth stopping the jobs for.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static bool enabled;
static bool drawn;
static struct timespec began;
static char shown[160];       /* the line on the terminal, while drawn */

void progress_start(bool wanted)
{
	enabled = wanted && isatty(STDERR_FILENO);
	clock_gettime(CLOCK_MONOTONIC, &began);
}

static void put(const char *text, size_t len)
{
	if (write(STDERR_FILENO, text, len) < 0)
		enabled = false;
}

void progress_draw(size_t done, size_t failed, size_t running, size_t total)
{
	struct timespec now;
	char line[160];
	int len;

	if (!enabled)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	len = snprintf(line, sizeof line,
		       "\r\033[K%zu/%zu done, %zu failed, %zu running, %llds",
		       done, total, failed, running, (long long)(now.tv_sec - began.tv_sec));
	/* The loop draws after every event; most change nothing. */
	if (len <= 0 || (size_t)len >= sizeof line || (drawn && strcmp(line, shown) == 0))
		return;
	put(line, (size_t)len);
	memcpy(shown, line, (size_t)len + 1);
	drawn = true;
}

void progress_clear(void)
{
	if (!drawn)
		return;
	put("\r\033[K", 4);
	drawn = false;
}
