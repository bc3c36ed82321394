/*
 * progress.c - --bar: one line on stderr, redrawn in place, saying how
 * many jobs are done, failed, running, out of how many, and for how long.
 *
 * Only on a terminal: in a log file the redraws would be noise.  The line
 * is erased before any output is written (output.c and warn() call
 * progress_clear) and drawn again after, so that it never ends up in the
 * middle of a job's text or of a message.  Output that ends without a newline leaves the cursor after it:
 * the bar is then drawn on the next line, not over it.  Writes to the
 * terminal are best effort: a progress line that cannot be drawn is not
 * worth stopping the jobs for.  Drawn from the background under `stty
 * tostop`, the bar stops errgroup and its jobs, as their text does
 * (output.c terminal_write); erasing it only takes back what errgroup drew,
 * and never stops it: errgroup erases it as it stops.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static bool enabled;
static bool drawn;
static bool mid_line;         /* the cursor follows a job's unfinished line */
static bool stdout_shared;    /* stdout is the bar's terminal too */
static struct timespec began;
static char shown[160];       /* the line on the terminal, while drawn */

/* Whether stdout is the terminal stderr is: a job's text there moves the
 * cursor the bar is drawn at. */
static bool stdout_is_our_terminal(void)
{
	struct stat out, err;

	return fstat(STDOUT_FILENO, &out) == 0 && fstat(STDERR_FILENO, &err) == 0 &&
	       S_ISCHR(out.st_mode) && out.st_rdev == err.st_rdev;
}

void progress_start(bool wanted)
{
	enabled = wanted && isatty(STDERR_FILENO);
	stdout_shared = enabled && stdout_is_our_terminal();
	clock_gettime(CLOCK_MONOTONIC, &began);
}

/* A write that may stop errgroup (terminal_write), or not. */
static void put(const char *text, size_t len, bool may_stop)
{
	ssize_t n;

	if (may_stop)
		n = terminal_write(STDERR_FILENO, text, len);
	else
		n = write(STDERR_FILENO, text, len);
	if (n < 0)
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
		       "%s\033[K%zu/%zu done, %zu failed, %zu running, %llds",
		       mid_line ? "\n" : "\r", done, total, failed, running,
		       (long long)(now.tv_sec - began.tv_sec));
	/* The loop draws after every event; most change nothing. */
	if (len <= 0 || (size_t)len >= sizeof line || (drawn && strcmp(line, shown) == 0))
		return;
	put(line, (size_t)len, true);
	memcpy(shown, line, (size_t)len + 1);
	drawn = true;
	mid_line = false;
}

void progress_clear(void)
{
	if (!drawn)
		return;
	put("\r\033[K", 4, false);
	drawn = false;
}

/* output.c wrote text to fd (1 or 2): where the cursor is now. */
void progress_wrote(int fd, const char *text, size_t len)
{
	if (!enabled || len == 0 || (fd == STDOUT_FILENO && !stdout_shared))
		return;
	mid_line = text[len - 1] != '\n';
}
