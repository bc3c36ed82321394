/*
 * jobs.c - the jobs to run, from the command line or the input lines.
 *
 * A job is an argv.  A line that is a whole command runs as
 * /bin/sh -c LINE; an argument (after ::: or one per line under COMMAND)
 * goes into COMMAND's words in place of {}, or after them as a last word.
 * An argument is never split or parsed again: it is one word of the argv
 * however many spaces or semicolons it holds.  Every job owns its strings,
 * so the list outlives the input it was read from.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int list_grow(struct joblist *list, size_t *capacity)
{
	struct job *grown;
	size_t want;

	if (list->count < *capacity)
		return 0;
	want = *capacity ? *capacity * 2 : 64;
	grown = reallocarray(list->jobs, want, sizeof *grown);
	if (!grown)
		return -ENOMEM;
	list->jobs = grown;
	*capacity = want;
	return 0;
}

/* word with every {} replaced by arg. */
static char *substitute(const char *word, const char *arg)
{
	size_t arg_len = strlen(arg), count = 0;
	const char *p;
	char *out, *q;

	for (p = word; (p = strstr(p, "{}")); p += 2)
		count++;
	out = malloc(strlen(word) - 2 * count + count * arg_len + 1);
	if (!out)
		return NULL;
	q = out;
	for (p = word; *p; ) {
		if (p[0] == '{' && p[1] == '}') {
			memcpy(q, arg, arg_len);
			q += arg_len;
			p += 2;
		} else {
			*q++ = *p++;
		}
	}
	*q = '\0';
	return out;
}

static bool has_placeholder(char *const *command)
{
	for (size_t i = 0; command[i]; i++)
		if (strstr(command[i], "{}"))
			return true;
	return false;
}

static void argv_free(char **argv)
{
	if (!argv)
		return;
	for (size_t i = 0; argv[i]; i++)
		free(argv[i]);
	free(argv);
}

/* COMMAND's words with arg put in. */
static char **argv_with(char *const *command, const char *arg)
{
	size_t words = 0, i;
	bool append = !has_placeholder(command);
	char **argv;

	while (command[words])
		words++;
	argv = calloc(words + 2, sizeof *argv);
	if (!argv)
		return NULL;
	for (i = 0; i < words; i++)
		if (!(argv[i] = substitute(command[i], arg)))
			goto fail;
	if (append && !(argv[i] = strdup(arg)))
		goto fail;
	return argv;
fail:
	argv_free(argv);
	return NULL;
}

static char **argv_shell(const char *line)
{
	char **argv = calloc(4, sizeof *argv);

	if (!argv)
		return NULL;
	if (!(argv[0] = strdup("/bin/sh")) || !(argv[1] = strdup("-c")) ||
	    !(argv[2] = strdup(line))) {
		argv_free(argv);
		return NULL;
	}
	return argv;
}

static bool is_control(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* Puts text (len bytes) at out + n, if out; returns n + len. */
static size_t put(char *out, size_t n, const char *text, size_t len)
{
	if (out)
		memcpy(out + n, text, len);
	return n + len;
}

/* A word with a control character in $'...', where each is an escape
 * (\n, \t, \ooo): the command text stays one line, for the job log's one
 * line per job and the report, and a shell still reads the word back
 * (bash, zsh, ksh, mksh, and POSIX since 2024).  Octal, in three digits:
 * ksh and mksh read every hex digit after \x, so that \x01 followed by
 * "b" would read as \x1b. */
static size_t quote_word_escaped(char *out, const char *word)
{
	size_t n = put(out, 0, "$'", 2);
	char x[4] = { '\\' };

	for (const unsigned char *p = (const unsigned char *)word; *p; p++) {
		if (*p == '\n')
			n = put(out, n, "\\n", 2);
		else if (*p == '\t')
			n = put(out, n, "\\t", 2);
		else if (*p == '\r')
			n = put(out, n, "\\r", 2);
		else if (*p == '\\' || *p == '\'') {
			x[1] = (char)*p;
			n = put(out, n, x, 2);
		} else if (is_control(*p)) {
			x[1] = (char)('0' + (*p >> 6));
			x[2] = (char)('0' + (*p >> 3 & 7));
			x[3] = (char)('0' + (*p & 7));
			n = put(out, n, x, 4);
		} else
			n = put(out, n, (const char *)p, 1);
	}
	return put(out, n, "'", 1);
}

/* A word as the shell would need it to read it back as one word: as it is
 * when it holds nothing special, else in single quotes, or in $'...' when
 * it holds a control character. */
static size_t quote_word(char *out, const char *word)
{
	static const char plain[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				    "0123456789-_./=:,+@%^";
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)word; *p; p++)
		if (is_control(*p))
			return quote_word_escaped(out, word);
	if (word[0] && strspn(word, plain) == strlen(word)) {
		n = strlen(word);
		if (out)
			memcpy(out, word, n);
		return n;
	}
	if (out)
		out[n] = '\'';
	n++;
	for (const char *p = word; *p; p++) {
		if (*p == '\'') {
			if (out)
				memcpy(out + n, "'\\''", 4);
			n += 4;
		} else {
			if (out)
				out[n] = *p;
			n++;
		}
	}
	if (out)
		out[n] = '\'';
	return n + 1;
}

/* argv as one line a person can paste into a shell. */
static char *argv_text(char *const *argv)
{
	size_t len = 0;
	char *text;

	for (size_t i = 0; argv[i]; i++)
		len += quote_word(NULL, argv[i]) + 1;
	text = malloc(len + 1);
	if (!text)
		return NULL;
	len = 0;
	for (size_t i = 0; argv[i]; i++) {
		if (i)
			text[len++] = ' ';
		len += quote_word(text + len, argv[i]);
	}
	text[len] = '\0';
	return text;
}

/* Adds a job for one argument, or for one shell line when COMMAND is
 * NULL; text is copied. */
static int add_job(struct joblist *list, size_t *capacity,
		   char *const *command, const char *text)
{
	struct job *job;

	if (list_grow(list, capacity) < 0)
		return -ENOMEM;
	job = &list->jobs[list->count];
	*job = (struct job){
		.seq = list->count + 1,
		.state = JOB_WAITING,
		.out = { .fd = -1, .to_fd = 1 },
		.err = { .fd = -1, .to_fd = 2 },
	};
	if (command) {
		job->argv = argv_with(command, text);
		job->command = job->argv ? argv_text(job->argv) : NULL;
		job->argument = strdup(text);
		job->name = job->argument;
	} else {
		job->argv = argv_shell(text);
		job->command = strdup(text);
		job->name = job->command;
	}
	if (!job->argv || !job->command || (command && !job->argument)) {
		argv_free(job->argv);
		free(job->command);
		free(job->argument);
		return -ENOMEM;
	}
	list->count++;
	return 0;
}

int jobs_from_args(struct joblist *list, const struct options *opts)
{
	size_t capacity = 0;

	for (size_t i = 0; opts->args[i]; i++)
		if (add_job(list, &capacity, opts->command, opts->args[i]) < 0) {
			warn("%s", strerror(ENOMEM));
			return -ENOMEM;
		}
	return 0;
}

static bool is_skipped(const char *line)
{
	return line[0] == '\0' || line[0] == '#';
}

/* Reads the jobs from in, which is source for messages: each problem is
 * reported here. */
int jobs_from_lines(struct joblist *list, const struct options *opts, FILE *in,
		    const char *source)
{
	size_t capacity = 0, size = 0, number = 0;
	char *line = NULL;
	ssize_t len;
	int r = 0;

	errno = 0;
	while ((len = getline(&line, &size, in)) >= 0) {
		number++;
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		/* A command or an argument ends at a NUL: the rest of the
		 * line would be dropped without a word. */
		if (memchr(line, '\0', (size_t)len)) {
			warn("%s, line %zu: holds a NUL byte", source, number);
			r = -EINVAL;
			break;
		}
		if (is_skipped(line))
			continue;
		r = add_job(list, &capacity, opts->command, line);
		if (r < 0) {
			warn("%s", strerror(-r));
			break;
		}
	}
	if (r == 0 && ferror(in)) {
		r = errno ? -errno : -EIO;
		warn("cannot read %s: %s", source, strerror(-r));
	}
	free(line);
	return r;
}

void jobs_name(struct joblist *list, const struct options *opts)
{
	for (size_t i = 0; i < opts->name_count && i < list->count; i++)
		list->jobs[i].name = opts->names[i];
}

void jobs_free(struct joblist *list)
{
	for (size_t i = 0; i < list->count; i++) {
		argv_free(list->jobs[i].argv);
		free(list->jobs[i].command);
		free(list->jobs[i].argument);
		capture_release(&list->jobs[i].out);
		capture_release(&list->jobs[i].err);
	}
	free(list->jobs);
}
