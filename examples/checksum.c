/*
 * checksum.c - checksum files in parallel, each in its own child process,
 * and stop at the first file that cannot be read.
 *
 *   checksum FILE...
 *
 * Prints "<fnv1a-64>  <file>" for each file, in the order they finish.
 * A file that cannot be read fails its task; with cancel-on-error the
 * others are stopped, and the program exits 1 with the first error.
 * Were the checksum code to crash on a bad file, only that child would
 * die: the crash is reported like any other error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <errgroup.h>

static int checksum_file(void *arg)
{
	const char *path = arg;
	unsigned char buf[65536];
	uint64_t hash = 0xcbf29ce484222325u;   /* FNV-1a, 64 bits */
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errgroup_errorf(1, "%s: %s", path, strerror(errno));
	while ((n = read(fd, buf, sizeof buf)) > 0)
		for (ssize_t i = 0; i < n; i++)
			hash = (hash ^ buf[i]) * 0x100000001b3u;
	if (n < 0)
		return errgroup_errorf(1, "%s: %s", path, strerror(errno));
	close(fd);
	printf("%016llx  %s\n", (unsigned long long)hash, path);
	return 0;
}

int main(int argc, char **argv)
{
	const struct errgroup_error *e;
	errgroup *g;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int r;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE...\n", argv[0]);
		return 2;
	}
	g = errgroup_new();
	if (!g) {
		perror("errgroup_new");
		return 1;
	}
	errgroup_set_limit(g, cpus > 0 ? (int)cpus : 1);
	errgroup_set_cancel_on_error(g, true);
	for (int i = 1; i < argc; i++) {
		r = errgroup_go(g, checksum_file, argv[i]);
		if (r == -ECANCELED)
			break;   /* a file failed: start no more */
		if (r < 0) {
			fprintf(stderr, "cannot start a task: %s\n", strerror(-r));
			break;
		}
	}
	e = errgroup_wait(g);
	if (e)
		fprintf(stderr, "checksum: %s (%zu task(s) failed or were stopped)\n",
			e->message, errgroup_error_count(g));
	errgroup_free(g);
	return e ? 1 : 0;
}
