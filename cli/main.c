/*
 * main.c - the errgroup command: its options, then the run.
 *
 *   errgroup [OPTIONS] [--] [COMMAND [ARG...] [::: ARG...]]
 *
 * Options end at the first word that is not one (getopt's "+"), so that
 * in `errgroup -j2 sh -c 'echo {}' ::: A B` the -c is sh's.  Every
 * problem with the command line or the input is reported here, before a
 * job starts, with status EXIT_USAGE.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* A canceled job has this long between SIGTERM and SIGKILL unless --grace
 * says otherwise: as the library's and Erlang's default, long enough for a
 * service to flush and close, short enough for someone at a terminal. */
#define DEFAULT_GRACE_MS 5000u

static const char program_name[] = "errgroup";

static const char usage_text[] =
"Usage: errgroup [OPTIONS] [--] [COMMAND [ARG...] [::: ARG...]]\n"
"Run commands in parallel as one group: the first failure stops the rest.\n"
"\n"
"  COMMAND ::: A B C   run COMMAND once per argument, without a shell; {} in\n"
"                      its words is replaced by the argument, which is else\n"
"                      added as a last word\n"
"  COMMAND             the same, one argument per line of standard input\n"
"                      (or of -a FILE)\n"
"  (no COMMAND)        one shell command per line of standard input (or of\n"
"                      -a FILE), each run with /bin/sh -c; empty lines and\n"
"                      lines starting with # are skipped\n"
"\n"
"  -j, --jobs N        at most N jobs at once (default: the online CPUs;\n"
"                      0: no limit)\n"
"  -k, --keep-going    do not stop at the first failure; run every job\n"
"      --one-for-all   when any job ends, successfully or not, stop the others\n"
"      --timeout SECS  stop a job that runs longer (fractional); it fails\n"
"      --grace SECS    time between SIGTERM and SIGKILL when jobs are stopped\n"
"                      (fractional; default 5)\n"
"      --retries N     run a failed job up to N more times\n"
"  -a, --arg-file FILE read the lines from FILE instead of standard input\n"
"      --stdin         jobs read errgroup's standard input (default /dev/null)\n"
"\n"
"      --group         write each job's output whole when it ends (default)\n"
"      --line-buffer   write each job's output line by line as it comes\n"
"  -u, --ungroup       jobs write straight to errgroup's output\n"
"      --tag           start each output line with the job's name and a tab\n"
"  -n, --name NAME     name the next job (repeat for each job); by default a\n"
"                      job is named by its argument or its line\n"
"      --joblog FILE   one line per job, GNU parallel's columns\n"
"      --json          one JSON object per job on standard output, at the end\n"
"      --bar           a progress line on standard error, if it is a terminal\n"
"  -h, --help          this text\n"
"  -V, --version       errgroup's version\n"
"\n"
"Each job leads its own process group: stopping a job sends SIGTERM to it\n"
"and everything it started, then SIGKILL after the grace period.  SIGINT,\n"
"SIGTERM or SIGHUP to errgroup stops every job, and a second one kills\n"
"them at once; if errgroup is killed, its jobs die with it.  Ctrl-Z, or\n"
"the terminal stopping errgroup in the background, suspends the jobs with\n"
"errgroup, and fg or bg resumes them.\n"
"\n"
"Exit status:\n"
"  0        every job succeeded (--one-for-all: the first job to end did)\n"
"  1-125    the exit status of the first job that failed\n"
"  124      the first job that failed ran past --timeout\n"
"  125      errgroup's own error (bad option, unreadable input,\n"
"           output that cannot be written)\n"
"  126      the first job that failed could not be executed\n"
"  127      ... was not found\n"
"  128+N    the first job that failed was killed by signal N\n"
"  129, 130, 143  errgroup was stopped by SIGHUP, SIGINT, SIGTERM\n"
"With --keep-going the first failure decides by the same rules.  A job that\n"
"exits with 125 or more itself passes that status on, as a shell does; the\n"
"report on standard error tells the cases apart.\n";

/*
 * Writes "errgroup: MESSAGE\n" to stderr, in one write when it fits in a
 * pipe's atomic size, as the jobs' output is written (output_write): a
 * stderr that a job shares (-u) may have been left non-blocking, and
 * stdio dropped the text on EAGAIN.  A message longer than the buffer (a
 * job's command may be) gets memory of its own, or is cut short.  As
 * before a job's output, --bar is erased first, and drawn again after.
 */
static void vwarn(const char *fmt, va_list ap)
{
	char buf[1024], *text = buf;
	size_t start, len;
	va_list again;
	int n;

	start = (size_t)snprintf(buf, sizeof buf, "%s: ", program_name);
	va_copy(again, ap);
	n = vsnprintf(buf + start, sizeof buf - start, fmt, ap);
	len = n < 0 ? 0 : (size_t)n;
	if (start + len >= sizeof buf) {
		text = malloc(start + len + 1);
		if (text) {
			memcpy(text, buf, start);
			vsnprintf(text + start, len + 1, fmt, again);
		} else {
			text = buf;
			len = sizeof buf - start - 1;
		}
	}
	va_end(again);
	text[start + len] = '\n';   /* over the terminating NUL */
	progress_clear();
	output_write(STDERR_FILENO, text, start + len + 1);
	progress_wrote(STDERR_FILENO, text, start + len + 1);
	if (text != buf)
		free(text);
}

void warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vwarn(fmt, ap);
	va_end(ap);
}

static void __attribute__((format(printf, 1, 2), noreturn))
die_usage(const char *fmt, ...)
{
	char hint[64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	vwarn(fmt, ap);
	va_end(ap);
	n = snprintf(hint, sizeof hint, "Try '%s --help' for more information.\n", program_name);
	output_write(STDERR_FILENO, hint, (size_t)n);
	exit(EXIT_USAGE);
}

/* After --help or --version: 0 if what was printed reached stdout. */
static void __attribute__((noreturn)) exit_after_output(void)
{
	if (fflush(stdout) == 0 && !ferror(stdout))
		exit(0);
	warn("cannot write to standard output: %s", strerror(errno));
	exit(EXIT_USAGE);
}

/* A whole non-negative decimal number no larger than max. */
static unsigned parse_count(const char *option, const char *text, unsigned max)
{
	unsigned long n;
	char *end;

	errno = 0;
	n = strtoul(text, &end, 10);
	if (text[0] < '0' || text[0] > '9' || *end != '\0')
		die_usage("%s: '%s' is not a whole number", option, text);
	if (errno == ERANGE || n > max)
		die_usage("%s: '%s' is too large (at most %u)", option, text, max);
	return (unsigned)n;
}

/* Fractional seconds as milliseconds, rounded to the nearest, but never 0
 * for a time that was not 0: --timeout 0.0001 must not mean "no limit". */
static unsigned parse_seconds(const char *option, const char *text)
{
	double seconds, ms;
	char *end;

	errno = 0;
	seconds = strtod(text, &end);
	/* Decimal only: strtod would also take hex ("0x10") and "inf". */
	if (end == text || *end != '\0' || !isfinite(seconds) ||
	    !((text[0] >= '0' && text[0] <= '9') || text[0] == '.') ||
	    text[strspn(text, "0123456789.eE+-")] != '\0')
		die_usage("%s: '%s' is not a number of seconds", option, text);
	ms = round(seconds * 1000.0);
	if (ms > (double)UINT_MAX)
		die_usage("%s: '%s' is too long (at most %u seconds)", option, text,
			  UINT_MAX / 1000);
	/* ERANGE here is an underflow (an overflow is not finite): 1e-400
	 * is a time too, if a short one. */
	if (ms < 1.0 && (seconds > 0.0 || errno == ERANGE))
		ms = 1.0;
	return (unsigned)ms;
}

static int online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n > 0 && n < INT_MAX ? (int)n : 1;
}

enum {
	OPT_ONE_FOR_ALL = 256,
	OPT_TIMEOUT,
	OPT_GRACE,
	OPT_RETRIES,
	OPT_GROUP,
	OPT_LINE_BUFFER,
	OPT_TAG,
	OPT_JOBLOG,
	OPT_JSON,
	OPT_BAR,
	OPT_STDIN,
};

static const struct option long_options[] = {
	{ "jobs",        required_argument, NULL, 'j' },
	{ "keep-going",  no_argument,       NULL, 'k' },
	{ "one-for-all", no_argument,       NULL, OPT_ONE_FOR_ALL },
	{ "timeout",     required_argument, NULL, OPT_TIMEOUT },
	{ "grace",       required_argument, NULL, OPT_GRACE },
	{ "retries",     required_argument, NULL, OPT_RETRIES },
	{ "arg-file",    required_argument, NULL, 'a' },
	{ "stdin",       no_argument,       NULL, OPT_STDIN },
	{ "group",       no_argument,       NULL, OPT_GROUP },
	{ "line-buffer", no_argument,       NULL, OPT_LINE_BUFFER },
	{ "ungroup",     no_argument,       NULL, 'u' },
	{ "tag",         no_argument,       NULL, OPT_TAG },
	{ "name",        required_argument, NULL, 'n' },
	{ "joblog",      required_argument, NULL, OPT_JOBLOG },
	{ "json",        no_argument,       NULL, OPT_JSON },
	{ "bar",         no_argument,       NULL, OPT_BAR },
	{ "help",        no_argument,       NULL, 'h' },
	{ "version",     no_argument,       NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

/* The option's name as the user wrote it (-j or --jobs), for messages. */
static const char *option_text(int c, int index, const char *scanned)
{
	static char text[32];

	if (strncmp(scanned, "--", 2) == 0 && index >= 0)
		snprintf(text, sizeof text, "--%s", long_options[index].name);
	else
		snprintf(text, sizeof text, "-%c", c);
	return text;
}

/*
 * Dies with what is wrong with a long option getopt refused: one that
 * takes no value given one (--json=yes), one that is short for several
 * (--jo), or one that does not exist.  getopt_long tells them apart only
 * by optopt, which is 0 for the last two.
 */
static _Noreturn void refuse_long_option(const char *scanned)
{
	const char *name = scanned + 2;
	size_t len = strcspn(name, "="), matches = 0;
	char list[256] = "";

	if (len == 0)
		die_usage("unknown option '%s'", scanned);
	for (const struct option *o = long_options; o->name; o++) {
		if (strncmp(o->name, name, len) != 0)
			continue;
		if (strlen(o->name) == len || optopt != 0) {
			if (name[len] == '=' && o->has_arg == no_argument)
				die_usage("option '--%s' takes no value", o->name);
			break;
		}
		snprintf(list + strlen(list), sizeof list - strlen(list), "%s--%s",
			 matches++ ? ", " : "", o->name);
	}
	if (matches > 1)
		die_usage("option '--%.*s' is ambiguous (%s)", (int)len, name, list);
	die_usage("unknown option '%.*s'", (int)(len + 2), scanned);
}

/* The option getopt refused, as the user wrote it: within a cluster of
 * short ones (-kx) only the letter, which optind does not point at. */
static const char *refused_option(const char *scanned)
{
	static char letter[3] = "-";

	if (optopt > 0 && optopt < 128 && scanned[1] != '-') {
		letter[1] = (char)optopt;
		return letter;
	}
	return scanned;
}

/* scanned: the argument getopt_long was reading when it returned c. */
static void parse_option(struct options *opts, int c, int index, const char *scanned)
{
	const char *name = option_text(c, index, scanned);

	switch (c) {
	case 'j':
		opts->jobs = (int)parse_count(name, optarg, INT_MAX);
		break;
	case 'k':
		opts->keep_going = true;
		break;
	case OPT_ONE_FOR_ALL:
		opts->one_for_all = true;
		break;
	case OPT_TIMEOUT:
		opts->timeout_ms = parse_seconds("--timeout", optarg);
		break;
	case OPT_GRACE:
		opts->grace_ms = parse_seconds("--grace", optarg);
		break;
	case OPT_RETRIES:
		opts->retries = parse_count("--retries", optarg, INT_MAX);
		break;
	case 'a':
		opts->arg_file = optarg;
		break;
	case OPT_STDIN:
		opts->share_stdin = true;
		break;
	case OPT_GROUP:
		opts->output = OUTPUT_GROUP;
		break;
	case OPT_LINE_BUFFER:
		opts->output = OUTPUT_LINE_BUFFER;
		break;
	case 'u':
		opts->output = OUTPUT_UNGROUP;
		break;
	case OPT_TAG:
		opts->tag = true;
		break;
	case 'n':
		/* optarg points into argv, which outlives the run. */
		opts->names[opts->name_count++] = optarg;
		break;
	case OPT_JOBLOG:
		opts->joblog_path = optarg;
		break;
	case OPT_JSON:
		opts->json = true;
		break;
	case OPT_BAR:
		opts->bar = true;
		break;
	case 'h':
		fputs(usage_text, stdout);
		exit_after_output();
	case 'V':
		printf("errgroup %s\n", ERRGROUP_VERSION);
		exit_after_output();
	case ':':
		die_usage("option '%s' needs a value", refused_option(scanned));
	default:
		if (strncmp(scanned, "--", 2) == 0)
			refuse_long_option(scanned);
		die_usage("unknown option '%s'", refused_option(scanned));
	}
}

/* Splits what follows the options into COMMAND and the words after :::. */
static void parse_command(struct options *opts, int argc, char **argv)
{
	int separator = -1;

	for (int i = optind; i < argc; i++)
		if (strcmp(argv[i], ":::") == 0) {
			separator = i;
			break;
		}
	if (separator == optind)
		die_usage("no COMMAND before :::");
	/* GNU parallel would run every combination of the lists: here the
	 * second ::: would quietly be an argument. */
	for (int i = separator + 1; separator >= 0 && i < argc; i++)
		if (strcmp(argv[i], ":::") == 0)
			die_usage("only one ::: is allowed (to run a ::: argument, give it with -a FILE)");
	if (separator >= 0) {
		if (opts->arg_file)
			die_usage("-a FILE and ::: both give arguments; use one");
		opts->args = argv + separator + 1;
		argv[separator] = NULL;   /* ends COMMAND */
	}
	if (optind < argc && argv[optind])
		opts->command = argv + optind;
}

static void check_options(const struct options *opts)
{
	if (opts->tag && opts->output == OUTPUT_UNGROUP)
		die_usage("--tag needs the output captured: not with --ungroup");
	/* The jobs would write into the bar, which could not clear itself
	 * before their lines. */
	if (opts->bar && opts->output == OUTPUT_UNGROUP)
		die_usage("--bar needs the output captured: not with --ungroup");
	if (opts->share_stdin && !opts->args && !opts->arg_file)
		die_usage("--stdin: standard input already holds the jobs; "
			  "give them with ::: or -a FILE");
}

static void parse_options(struct options *opts, int argc, char **argv)
{
	int c, index, scanning;

	*opts = (struct options){
		.jobs = online_cpus(),
		.grace_ms = DEFAULT_GRACE_MS,
		.output = OUTPUT_GROUP,
	};
	/* Every --name is an argument, so argc bounds their number. */
	opts->names = calloc((size_t)argc, sizeof *opts->names);
	if (!opts->names) {
		warn("%s", strerror(ENOMEM));
		exit(EXIT_USAGE);
	}
	opterr = 0;
	for (;;) {
		scanning = optind;
		index = -1;
		c = getopt_long(argc, argv, "+:j:ka:un:hV", long_options, &index);
		if (c == -1)
			break;
		parse_option(opts, c, index, argv[scanning]);
	}
	parse_command(opts, argc, argv);
	check_options(opts);
}

static int read_jobs(struct joblist *list, const struct options *opts)
{
	FILE *in = stdin;
	int r;

	if (opts->args)
		return jobs_from_args(list, opts);
	if (opts->arg_file) {
		in = fopen(opts->arg_file, "re");
		if (!in) {
			warn("cannot open %s: %s", opts->arg_file, strerror(errno));
			return -errno;
		}
	}
	r = jobs_from_lines(list, opts, in, opts->arg_file ? opts->arg_file : "standard input");
	if (in != stdin)
		fclose(in);
	return r;
}

/*
 * A closed standard fd would be taken by the next fd we open: with stdout
 * closed, our signalfd became fd 1, and writing the jobs' output waited
 * for a signalfd to turn writable, for ever.  Each closed one is held by
 * /dev/null opened the other way round, so that using it fails with EBADF
 * as it would have, for us and for the jobs that inherit it.
 */
static void hold_closed_standard_fds(void)
{
	static const int flags[3] = { O_WRONLY, O_RDONLY, O_RDONLY };

	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		/* open returns the lowest free fd: this one. */
		if (open("/dev/null", flags[fd]) != fd)
			exit(EXIT_USAGE);
	}
}

int main(int argc, char **argv)
{
	struct joblist list = { 0 };
	struct outcome outcome;
	struct options opts;
	int status, res;

	/* As PID 1, errgroup splits into an init and the command before the
	 * command has made any state. */
	init_if_pid_1();
	/* An ignored SIGCHLD survives exec: the kernel would then reap the
	 * jobs itself, and where it keeps no status for pidfds (before
	 * Linux 6.15) every job's would be lost. */
	signal(SIGCHLD, SIG_DFL);
	/* A reader that went away is an error to report, after the jobs
	 * were stopped as for a failure, not a death without a word (the
	 * jobs start with every disposition reset). */
	signal(SIGPIPE, SIG_IGN);
	hold_closed_standard_fds();
	parse_options(&opts, argc, argv);
	if (read_jobs(&list, &opts) < 0) {
		jobs_free(&list);
		free(opts.names);
		return EXIT_USAGE;
	}
	jobs_name(&list, &opts);
	if (run(&list, &opts, &outcome) < 0) {
		status = EXIT_USAGE;
	} else {
		res = opts.json ? json_write(&list) : 0;
		if (res < 0)
			warn("cannot write the JSON report: %s", strerror(-res));
		report(&list, &opts, &outcome);
		status = exit_status(&outcome);
		if (status == 0 && res < 0)
			status = EXIT_USAGE;
	}
	outcome_free(&outcome);
	jobs_free(&list);
	free(opts.names);
	return status;
}
