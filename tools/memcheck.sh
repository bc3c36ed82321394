#!/bin/sh
# Runs each test binary under valgrind and judges the parent's report only.
# Forked children stay under valgrind; they leave with _exit() holding a
# copy of the parent's heap, so their "leaks" are not leaks.  With
# --child-silent-after-fork they write nothing, and without
# --error-exitcode their exit statuses (the tasks' results) stay intact.
# Valgrind 3.19 answers ENOSYS to pidfd_open, so this also exercises the
# library's fallback without pidfds.
set -u
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail=0
for t in "$@"; do
	name=$(basename "$t")
	log="$dir/$name.log"
	echo "== valgrind $t"
	if ! timeout -k 5 900 valgrind -q --leak-check=full --show-leak-kinds=definite,indirect,possible \
		--errors-for-leak-kinds=definite,indirect,possible --child-silent-after-fork=yes \
		--log-file="$log" "$t"; then
		echo "FAILED: $t (its own tests)"
		fail=1
	fi
	# Errors and leaks are the "==pid==" lines; "--pid--" lines are
	# valgrind's own notes, such as the ENOSYS it gives pidfd_open.
	if grep -q '^==[0-9]*==' "$log"; then
		echo "FAILED: $t: valgrind reported:"
		cat "$log"
		fail=1
	fi
done
if [ $fail -ne 0 ]; then
	echo "memcheck failed"
	exit 1
fi
echo "memcheck: no errors, no leaks"
