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
# Only the API is exported from the shared library.
if nm -D --defined-only "$dest/opt/errgroup/lib/liberrgroup.so" | awk '{print $3}' | grep -v '^errgroup_' | grep -v '^ERRGROUP_1$' | grep .; then
	echo "install test: symbols outside the API are exported"; fail=1
fi
[ "$(readlink "$dest/opt/errgroup/lib/liberrgroup.so.1")" = liberrgroup.so.1.0.0 ] ||
	{ echo "install test: soname link missing"; fail=1; }
[ $fail -eq 0 ] && echo "install test: shared and static builds through pkg-config behave"
exit $fail
