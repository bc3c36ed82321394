/*
 * test_stdio.c - stdio across the fork: what the host had buffered before
 * errgroup_go is written once, not again by a task that flushes; what a
 * task prints is written when it returns, not lost at _exit.  For narrow
 * and for wide-oriented streams.
 *
 * Each scenario runs twice: first in a host that has only ever had one
 * thread, where the library looks for pending output itself, without
 * libc's lock (flush.c); then, once the host has had a second thread
 * (glibc then calls it multi-threaded for good), where it leaves that to
 * fflush(NULL).  Scenarios flush everything first, so that the stream
 * they test is the only one with pending output: otherwise a flush done
 * for another stream would hide a missed one.
 */
#include "helpers.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <wchar.h>
#if __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h>
#endif

static int noop(void *arg)
{
	(void)arg;
	return 0;
}

static FILE *shared_stream;   /* a fully buffered stream on a temp file */

static FILE *open_temp_stream(char *path)
{
	int fd = mkstemp(path);
	FILE *f;

	assert_true(fd >= 0);
	f = fdopen(fd, "a");
	assert_non_null(f);
	assert_int_equal(setvbuf(f, NULL, _IOFBF, 4096), 0);
	return f;
}

/* The whole file, NUL-terminated, into buf. */
static void read_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, buf, size - 1);
	close(fd);
	assert_true(n >= 0);
	buf[n] = '\0';
}

static size_t count_occurrences(const char *text, const char *needle)
{
	size_t n = 0;

	for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

static void test_host_buffered_output_is_written_once(void **state)
{
	char path[] = "/tmp/errgroup-test-stdio-XXXXXX", text[4096];
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	shared_stream = open_temp_stream(path);
	fflush(NULL);
	fprintf(shared_stream, "host output buffered before go;");
	for (int i = 0; i < 3; i++)
		assert_int_equal(errgroup_go(g, noop, NULL), i);
	assert_null(errgroup_wait(g));
	fclose(shared_stream);

	read_file(path, text, sizeof text);
	unlink(path);
	assert_string_equal(text, "host output buffered before go;");
	errgroup_free(g);
}

static int print_without_newline(void *arg)
{
	fprintf(shared_stream, "task %d output;", (int)(intptr_t)arg);
	return 0;
}

static void test_task_output_is_flushed_when_it_returns(void **state)
{
	char path[] = "/tmp/errgroup-test-stdio-XXXXXX", text[4096], line[64];
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	shared_stream = open_temp_stream(path);
	fflush(NULL);
	for (int i = 0; i < 3; i++)
		assert_int_equal(errgroup_go(g, print_without_newline, (void *)(intptr_t)i), i);
	assert_null(errgroup_wait(g));
	fclose(shared_stream);

	read_file(path, text, sizeof text);
	unlink(path);
	for (int i = 0; i < 3; i++) {
		snprintf(line, sizeof line, "task %d output;", i);
		assert_int_equal(count_occurrences(text, line), 1);
	}
	assert_int_equal(strlen(text), 3 * strlen("task 0 output;"));
	errgroup_free(g);
}

/*
 * Streams that print wide characters keep their output in a buffer of
 * their own, which a quick look for pending output (flush.c) does not
 * see: such a stream must count as pending.  Otherwise the host's wide
 * output would be written again by a task that flushes for output of its
 * own, and a task's wide output would be lost when it returns.
 */
static FILE *wide_stream;

static int print_narrow(void *arg)
{
	(void)arg;
	fprintf(shared_stream, "narrow;");
	return 0;
}

static int print_wide(void *arg)
{
	(void)arg;
	fwprintf(wide_stream, L"task wide output;");
	return 0;
}

static void test_host_wide_buffered_output_is_written_once(void **state)
{
	char path[] = "/tmp/errgroup-test-stdio-XXXXXX", narrow_path[] = "/tmp/errgroup-test-stdio-XXXXXX";
	char text[4096];
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	wide_stream = open_temp_stream(path);
	shared_stream = open_temp_stream(narrow_path);
	fflush(NULL);
	fwprintf(wide_stream, L"host wide output;");
	assert_int_equal(errgroup_go(g, print_narrow, NULL), 0);
	assert_null(errgroup_wait(g));
	fclose(wide_stream);
	fclose(shared_stream);
	unlink(narrow_path);

	read_file(path, text, sizeof text);
	unlink(path);
	assert_string_equal(text, "host wide output;");
	errgroup_free(g);
}

static void test_task_wide_output_is_flushed_when_it_returns(void **state)
{
	char path[] = "/tmp/errgroup-test-stdio-XXXXXX", text[4096];
	errgroup *g = errgroup_new();

	(void)state;
	assert_non_null(g);
	wide_stream = open_temp_stream(path);
	fwide(wide_stream, 1);
	fflush(NULL);
	assert_int_equal(errgroup_go(g, print_wide, NULL), 0);
	assert_null(errgroup_wait(g));
	fclose(wide_stream);

	read_file(path, text, sizeof text);
	unlink(path);
	assert_string_equal(text, "task wide output;");
	errgroup_free(g);
}

/* From here on the host counts as multi-threaded. */
static void *return_arg(void *arg)
{
	return arg;
}

static void test_host_has_had_a_second_thread(void **state)
{
	pthread_t thread;

	(void)state;
	assert_int_equal(pthread_create(&thread, NULL, return_arg, NULL), 0);
	assert_int_equal(pthread_join(thread, NULL), 0);
#if __has_include(<sys/single_threaded.h>)
	assert_false(__libc_single_threaded);
#endif
}

static void test_host_buffered_output_is_written_once_in_a_threaded_host(void **state)
{
	test_host_buffered_output_is_written_once(state);
}

static void test_task_output_is_flushed_when_it_returns_in_a_threaded_host(void **state)
{
	test_task_output_is_flushed_when_it_returns(state);
}

static void test_host_wide_buffered_output_is_written_once_in_a_threaded_host(void **state)
{
	test_host_wide_buffered_output_is_written_once(state);
}

static void test_task_wide_output_is_flushed_when_it_returns_in_a_threaded_host(void **state)
{
	test_task_wide_output_is_flushed_when_it_returns(state);
}

/*
 * A threaded host with a thread blocked reading a stream (as one blocks in
 * fgets(stdin)): the reader holds the stream's lock as long as it waits.
 * fflush(NULL) takes every stream's lock, so errgroup_go would wait for
 * the line; the library flushes only streams with output pending, and a
 * stream being read has none.  go() and wait() run in a thread of their
 * own, so that a hang fails the test instead of stalling it.
 */
static FILE *read_stream;
static int go_done[2];
static atomic_int reader_tid;

static void *read_a_line(void *arg)
{
	char line[64];

	(void)arg;
	atomic_store(&reader_tid, (int)gettid());
	return fgets(line, sizeof line, read_stream);
}

/* Whether thread tid sits in read(fd), in the kernel's view. */
static bool waits_in_read(int tid, int fd)
{
	unsigned long long args[6];
	long nr;

	return read_thread_syscall(tid, &nr, args) >= 2 && nr == SYS_read &&
	       args[0] == (unsigned long long)fd;
}

static void *go_and_wait(void *arg)
{
	errgroup *g = arg;
	int r = errgroup_go(g, noop, NULL);

	if (r == 0 && errgroup_wait(g))
		r = -1;
	if (write(go_done[1], &r, sizeof r) != sizeof r)
		abort();
	return NULL;
}

static void test_go_does_not_wait_for_a_thread_reading_a_stream(void **state)
{
	struct pollfd done = { .events = POLLIN };
	pthread_t reader, starter;
	errgroup *g = errgroup_new();
	int input[2], ready, r = -2;

	(void)state;
	assert_non_null(g);
	assert_int_equal(pipe2(input, O_CLOEXEC), 0);
	assert_int_equal(pipe2(go_done, O_CLOEXEC), 0);
	read_stream = fdopen(input[0], "r");
	assert_non_null(read_stream);
	atomic_store(&reader_tid, 0);
	assert_int_equal(pthread_create(&reader, NULL, read_a_line, NULL), 0);
	/* The reader takes the stream's lock before it blocks in read():
	 * wait until it sits there. */
	while (atomic_load(&reader_tid) == 0 || !waits_in_read(atomic_load(&reader_tid), input[0]))
		sched_yield();
	assert_int_equal(pthread_create(&starter, NULL, go_and_wait, g), 0);
	done.fd = go_done[0];
	do
		ready = poll(&done, 1, WAIT_LIMIT_MS);
	while (ready < 0 && errno == EINTR);
	/* The line that lets the reader go, so that everything ends. */
	assert_int_equal(write(input[1], "line\n", 5), 5);
	assert_int_equal(pthread_join(starter, NULL), 0);
	assert_int_equal(pthread_join(reader, NULL), 0);
	assert_int_equal(read(go_done[0], &r, sizeof r), sizeof r);
	fclose(read_stream);
	close(input[1]);
	close(go_done[0]);
	close(go_done[1]);
	errgroup_free(g);
	assert_int_equal(ready, 1);   /* go and wait ended while the reader waited */
	assert_int_equal(r, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		census_test(test_host_buffered_output_is_written_once),
		census_test(test_task_output_is_flushed_when_it_returns),
		census_test(test_host_wide_buffered_output_is_written_once),
		census_test(test_task_wide_output_is_flushed_when_it_returns),
		census_test(test_host_has_had_a_second_thread),
		census_test(test_host_buffered_output_is_written_once_in_a_threaded_host),
		census_test(test_task_output_is_flushed_when_it_returns_in_a_threaded_host),
		census_test(test_host_wide_buffered_output_is_written_once_in_a_threaded_host),
		census_test(test_task_wide_output_is_flushed_when_it_returns_in_a_threaded_host),
		census_test(test_go_does_not_wait_for_a_thread_reading_a_stream),
	};

	census_begin();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
