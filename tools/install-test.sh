#!/bin/sh
# Installs into a scratch DESTDIR and builds examples/checksum.c as a user
# would, only from the installed header through pkg-config, against the
# shared and the static library; both must behave as documented.
set -eu
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
# A prefix outside the system directories, which pkg-config leaves out.
make --no-print-directory install DESTDIR="$dest" PREFIX=/opt/errgroup >/dev/null
export PKG_CONFIG_PATH="$dest/opt/errgroup/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest"
cc=${CC:-cc}
# shellcheck disable=SC2046
$cc -o "$dest/checksum-shared" examples/checksum.c $(pkg-config --cflags --libs errgroup)
# shellcheck disable=SC2046
$cc -o "$dest/checksum-static" examples/checksum.c $(pkg-config --cflags errgroup) \
	-static $(pkg-config --static --libs errgroup)
fail=0
for kind in shared static; do
	bin="$dest/checksum-$kind"
	if ! LD_LIBRARY_PATH="$dest/opt/errgroup/lib" "$bin" Makefile README.md >/dev/null; then
		echo "install test: checksum ($kind) failed on readable files"; fail=1
	fi
	if LD_LIBRARY_PATH="$dest/opt/errgroup/lib" "$bin" Makefile /nonexistent 2>/dev/null >&2; then
		echo "install test: checksum ($kind) succeeded on a missing file"; fail=1
	fi
done
# Only the API is exported from the shared library, and only the API is
# global in the static one: a program may name its own functions as the
# library's internals are named.
if nm -D --defined-only "$dest/opt/errgroup/lib/liberrgroup.so" | awk '{print $3}' | grep -v '^errgroup_' | grep -v '^ERRGROUP_1$' | grep .; then
	echo "install test: symbols outside the API are exported"; fail=1
fi
if nm --defined-only "$dest/opt/errgroup/lib/liberrgroup.a" | awk 'NF == 3 && $2 ~ /[A-Z]/ {print $3}' | grep -v '^errgroup_' | grep .; then
	echo "install test: the static library has global symbols outside the API"; fail=1
fi
cat > "$dest/own-names.c" <<'EOF_C'
#include <errgroup.h>
int channel_open(void), now_ns(void), task_find(void), start_task(void);
int channel_open(void) { return 1; }
int now_ns(void) { return 2; }
int task_find(void) { return 3; }
int start_task(void) { return 4; }
static int task(void *arg) { (void)arg; return 0; }
int main(void)
{
	errgroup *g = errgroup_new();
	int ok = g && errgroup_go(g, task, 0) == 0 && !errgroup_wait(g);

	errgroup_free(g);
	return ok && channel_open() + now_ns() + task_find() + start_task() == 10 ? 0 : 1;
}
EOF_C
# shellcheck disable=SC2046
if ! $cc -o "$dest/own-names" "$dest/own-names.c" $(pkg-config --cflags errgroup) \
	-static $(pkg-config --static --libs errgroup) || ! "$dest/own-names"; then
	echo "install test: a static program with names of the library's internals failed"; fail=1
fi
# A tree moved elsewhere finds itself: every path in errgroup.pc is the
# prefix's.
moved=$(PKG_CONFIG_SYSROOT_DIR='' pkg-config --define-prefix --cflags --libs errgroup)
case $moved in
*"-I$dest/opt/errgroup/include"*"-L$dest/opt/errgroup/lib"*) ;;
*) echo "install test: errgroup.pc does not follow its prefix: $moved"; fail=1 ;;
esac
[ "$(readlink "$dest/opt/errgroup/lib/liberrgroup.so.1")" = liberrgroup.so.1.0.0 ] ||
	{ echo "install test: soname link missing"; fail=1; }
[ $fail -eq 0 ] && echo "install test: shared and static builds through pkg-config behave"
exit $fail
