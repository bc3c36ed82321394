/*
 * errgroup.h - run a group of tasks, each in its own child process, as one
 * unit of work.
 *
 * This is Go's golang.org/x/sync/errgroup (Go, TryGo, SetLimit, WithContext,
 * Wait) with process isolation: every errgroup_go() forks a child that runs
 * the task, so a crash, a hang or a corrupted heap in the task never harms
 * the caller.  The parent follows each child through a pidfd, the task's
 * error comes back over the group's channel, a limit caps how many
 * children run at once, and with cancel-on-error the first failure stops
 * the others (SIGTERM, then SIGKILL after a grace period).  A task may also
 * be a program (errgroup_go_cmd), may have a time limit, and a caller with
 * its own event loop can take each task's end from errgroup_fd().
 *
 * Conventions.  Functions that act return 0 (or a task index) on success and
 * a negative errno value on failure; they never set errno.  Only
 * errgroup_new() returns NULL and sets errno.  Every function may be called
 * from several threads at once, except errgroup_free(), which must be the
 * last call on a group.  The calls on a group are not cancellation
 * points, except where the go() family begins and where it has waited
 * for room, with nothing held: a thread that pthread_cancel() targets
 * while it is in errgroup_wait() is canceled once the call has returned
 * (errgroup_cancel() makes it return); one in errgroup_go() waiting for
 * room is canceled once there is room, before the call starts anything,
 * so that it does not return and no task starts.  A request already
 * pending when a thread calls errgroup_go() or a sibling acts as the call
 * begins, before it takes anything.  A task runs with the cancel state of
 * the thread that started it; a request that reaches that thread while
 * the call runs (after it began, before the fork) may be copied into the
 * task too, and would end the task's first thread at its first
 * cancellation point.  A group belongs to the process
 * that created it: in a forked child (a task included) every function on
 * an inherited group returns -ECHILD, or does nothing, and errgroup_free()
 * frees only the group itself (the rest may have been half-changed by
 * another thread at the fork, so it is left to the process's end).
 *
 * What a task may do.  The task runs in a child forked from the thread
 * that called errgroup_go(), with the memory the parent had at that
 * moment.  A child of a multi-threaded program has only one thread: locks
 * that other threads held at the fork stay locked in it, so a task should
 * not rely on the host's own locks (glibc's malloc and stdio are safe:
 * glibc resets their locks at fork).  When the task returns, the child
 * flushes stdio and leaves with _exit(): the host's atexit handlers never
 * run in it.  The child leads its own process group, and has no
 * controlling terminal, so the caller's terminal never stops it in the
 * background (SIGTTIN, SIGTTOU): its stdin may still be the terminal,
 * read and written as a file, but a prompt on /dev/tty fails.  It holds
 * two library fds: the group's channel (closed on exec) and the read end
 * of its lifeline pipe, which stays open across exec because it is what
 * kills the task's process group if the calling process dies (a task that
 * closes it is no longer killed that way).  A task that closes the
 * channel (closefrom, say) can no longer report: its messages are lost,
 * and a nonzero return reaches the parent as its exit status, cut to 8
 * bits, with cause ERRGROUP_EXITED.  Every other library fd is
 * closed in every child.  When a task ends, however it ended, whatever is
 * left of its process group gets SIGKILL before the task is reaped: what
 * a task starts does not outlive it, unless it leaves the process group
 * (setsid, setpgid).  No library fd is ever 0, 1 or 2, even in a host
 * that closed its stdio, so a task's printf never lands in them.
 *
 * Sanitizers: under ASan and TSan, malloc is not fork-safe (their
 * allocators hold locks that glibc does not reset at fork), so a task of a
 * threaded host built with them can hang in malloc; plain builds cannot.
 *
 * The channel is shared by the group's tasks, which is what makes it cost
 * a task no system call.  So a task can spoil it for its siblings: one that
 * calls shutdown() on it, changes its SO_SNDBUF or makes it non-blocking
 * can cost them their messages and their full return codes (their exit
 * statuses still arrive, and so does every task's end); one that floods
 * it keeps a sibling's message waiting, and so that sibling's end, for as
 * long as the flood lasts (a flooder is still killed on time by a cancel,
 * a timeout or free); and one with CAP_SYS_ADMIN can send frames in
 * another task's name.  Tasks that must not trust each other belong in
 * different groups.
 */
#ifndef ERRGROUP_H
#define ERRGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define ERRGROUP_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define ERRGROUP_PRINTF(fmt, args)
#endif

typedef struct errgroup errgroup;

/* A task runs in the child.  0 means success; any other value is the
 * task's error code and reaches the parent whole (not cut to 8 bits). */
typedef int errgroup_task(void *arg);

/* How a failed task ended.  The values are part of the ABI. */
enum errgroup_cause {
	ERRGROUP_RETURNED = 1, /* the task returned nonzero; code = the returned value */
	ERRGROUP_EXITED,       /* the child exited nonzero without returning (exit(),
	                          _exit(), an exec'd program); code = exit status, or
	                          -1 when the status was lost (see errgroup_wait) */
	ERRGROUP_SIGNALED,     /* killed by a signal the group did not send (a crash);
	                          code = signal number */
	ERRGROUP_CANCELED,     /* stopped by the group (cancel-on-error or
	                          errgroup_cancel); code = the signal that ended it,
	                          or its exit status */
	ERRGROUP_TIMEOUT,      /* stopped because it ran past the group's timeout
	                          or deadline; code = the signal that ended it, or
	                          its exit status */
};

struct errgroup_error {
	int task;                  /* the index errgroup_go/try_go returned for it */
	pid_t pid;                 /* the child's pid (already reaped: only a label) */
	enum errgroup_cause cause;
	int code;
	const char *message;       /* never NULL: the task's last errgroup_errorf()
	                              text, else a description such as
	                              "killed by signal 11 (SIGSEGV)" or
	                              "exited with status 3" */
};

/*
 * errgroup_new - a new group, like Go's zero Group: no limit, no
 * cancellation on error, a grace period of ERRGROUP_DEFAULT_GRACE_MS.
 * Returns NULL and sets errno (ENOMEM, EMFILE, ENFILE) on failure.
 */
errgroup *errgroup_new(void);

/*
 * errgroup_set_limit - at most n children of this group run at once (n > 0),
 * or no limit (n < 0, the default).  Returns 0; -EINVAL for n == 0; -EBUSY
 * while children of the group run (as Go's SetLimit panics).  A child that
 * has exited is reaped first, so it no longer counts; in a group with a
 * supervisor thread (see below) that thread reaps it, a moment after its
 * exit.
 */
int errgroup_set_limit(errgroup *g, int n);

/*
 * errgroup_set_cancel_on_error - Go's WithContext: when on, the first task
 * that fails cancels the group (see errgroup_cancel).  Off by default.
 * A group with it on starts a supervisor thread at its first errgroup_go()
 * (at once if children already run or are starting) and keeps it until
 * errgroup_free(), so that cancellation is prompt even while the caller is
 * busy elsewhere; a group with it off (and never canceled) uses no thread:
 * the caller reaps its children in errgroup_go() and errgroup_wait().
 * Returns 0; -EAGAIN when children run and the supervisor thread cannot be
 * started (the setting is made all the same); -ECHILD.
 */
int errgroup_set_cancel_on_error(errgroup *g, bool on);

/*
 * errgroup_set_grace_ms - how long a canceled child has between SIGTERM and
 * SIGKILL.  0 sends SIGKILL at once.  Returns 0.
 */
#define ERRGROUP_DEFAULT_GRACE_MS 5000u
int errgroup_set_grace_ms(errgroup *g, unsigned ms);

/*
 * errgroup_set_timeout_ms - a limit on each task's wall time, counted from
 * its start: a task still running after ms milliseconds gets SIGTERM (its
 * whole process group), then SIGKILL after the grace period, and fails with
 * cause ERRGROUP_TIMEOUT even if it then exits 0.  Under cancel-on-error
 * that failure cancels the group.  0 (the default) means no limit.  Applies
 * to tasks started after the call, and to one whose start another thread
 * has under way.  A group with a timeout or a deadline starts a supervisor
 * thread at its first errgroup_go() (at once for a start under way), as
 * for cancel-on-error: one thread per group, whatever the number of tasks.
 * Returns 0; -EAGAIN when that thread cannot be started (the timeout is
 * set all the same); -ECHILD.
 */
int errgroup_set_timeout_ms(errgroup *g, unsigned ms);

/*
 * errgroup_set_deadline - the whole group must be done by abs_monotonic, a
 * CLOCK_MONOTONIC time: at the deadline every running child is stopped as
 * by a timeout (cause ERRGROUP_TIMEOUT), and from then on errgroup_go
 * returns -ETIMEDOUT, also after wait: an expired deadline is final, even
 * one that passed while no call looked, and a later call cannot replace or
 * remove it.  One past 2^64 nanoseconds (some 584 years of uptime) is
 * never reached.  NULL removes a deadline that has not expired yet.  Of
 * cancellation and the deadline, both final, the first to come decides
 * what errgroup_go returns.  Returns 0; -EINVAL for a negative tv_sec or
 * a tv_nsec out of range; -EAGAIN when children already run and the
 * supervisor thread cannot be started (the deadline is set all the same,
 * and acts when a call next looks); -ECHILD.
 */
struct timespec;
int errgroup_set_deadline(errgroup *g, const struct timespec *abs_monotonic);

/*
 * errgroup_go - start fn(arg) in a new child process.  Blocks while the group
 * is at its limit.  Returns the task's index (0, 1, 2... in the order the
 * group accepted its tasks), or:
 *   -ECANCELED  the group was canceled (before or while this call waited);
 *               nothing was started;
 *   -ETIMEDOUT  the group's deadline passed (errgroup_set_deadline); of
 *               the two, the one that came first is returned from then on;
 *   -EAGAIN, -ENOMEM, -EMFILE, -ENFILE  fork, socketpair or pidfd_open
 *               failed, or (-EAGAIN) the supervisor thread that
 *               cancel-on-error, a timeout or a deadline needs could not
 *               be started, which may last (a seccomp filter, a process
 *               that entered a new pid namespace); nothing was started
 *               and the group is unchanged;
 *   -ECHILD     the group was inherited from the parent process;
 *   -EINVAL     fn is NULL.
 * The caller's buffered stdio output is flushed before the fork, so that it
 * is not written twice.
 */
int errgroup_go(errgroup *g, errgroup_task *fn, void *arg);

/* errgroup_try_go - as errgroup_go, but -EAGAIN instead of blocking at the
 * limit (Go's TryGo). */
int errgroup_try_go(errgroup *g, errgroup_task *fn, void *arg);

/* A program to run as a task (errgroup_go_cmd). */
struct errgroup_cmd {
	const char *const *argv;   /* NULL-terminated; argv[0] is the program,
	                              searched in the caller's PATH unless it
	                              contains a '/'; a script without "#!"
	                              is run by /bin/sh, as execvp() does */
	const char *const *envp;   /* its environment; NULL: the caller's */
	const char *dir;           /* its working directory; NULL: the caller's */
	const int *stdio;          /* NULL: it shares the caller's fds 0, 1, 2,
	                              as exec would (one the caller marked
	                              O_CLOEXEC is closed in it);
	                              else three fds to become its 0, 1, 2
	                              (-1: that one stays the caller's, as
	                              with NULL; a given one is passed on
	                              whatever its O_CLOEXEC); one
	                              that is closed, or that names one of
	                              the library's own fds (a number the
	                              caller closed, taken since), fails the
	                              task with 126 and EBADF's text */
};

/*
 * errgroup_go_cmd - start a program as a task.  The same task as any other:
 * it leads its own process group, starts with default signal dispositions
 * and an empty signal mask, holds no library fd but its lifeline (so it
 * dies with the calling process, unless it closes the fds it inherited),
 * has no controlling terminal (a program that prompts on /dev/tty fails
 * instead of being stopped), and counts against the limit, the timeout
 * and cancellation.  Its exit status is its result: 0 is success,
 * anything else an error with cause ERRGROUP_EXITED or ERRGROUP_SIGNALED.
 * It is started without copying the caller's memory (clone with CLONE_VM
 * and CLONE_VFORK, as posix_spawn does), so it costs the same in a host with
 * a large heap as in a small one.  The caller's fds without O_CLOEXEC stay
 * open in the program, as with exec.
 *
 * A program that cannot be started is still a task: it fails with cause
 * ERRGROUP_EXITED, code 127 when the program or the directory was not
 * found, 126 otherwise, and a message that names the program (or the
 * directory) and the reason, such as
 *     "cannot execute 'frob': No such file or directory".
 * Returns the task's index, or the errors of errgroup_go; -EINVAL when cmd,
 * cmd->argv or argv[0] is NULL.
 */
int errgroup_go_cmd(errgroup *g, const struct errgroup_cmd *cmd);

/* errgroup_try_go_cmd - as errgroup_go_cmd, but -EAGAIN at the limit. */
int errgroup_try_go_cmd(errgroup *g, const struct errgroup_cmd *cmd);

/*
 * errgroup_wait - block until every child started so far has exited and
 * been reaped.  Returns the group's first error, or NULL when none of its
 * tasks has failed.  The first error is sticky: a group that was not
 * canceled may be used again after wait, and a later error never replaces
 * the first.  A child that exits with status 0 is a success, whatever it
 * printed or sent.  If something other than the group reaps a child (the
 * host sets SIGCHLD to SIG_IGN, or calls waitpid(-1)), the status is taken
 * from the kernel (PIDFD_INFO_EXIT, Linux 6.15 and later); where that is
 * not possible the task fails with ERRGROUP_EXITED, code -1, and a message
 * that says the status was lost: never a silent success.
 */
const struct errgroup_error *errgroup_wait(errgroup *g);

/* How one task ended, successfully or not (errgroup_reap). */
struct errgroup_exit {
	int task;                  /* its index */
	pid_t pid;                 /* its pid (already reaped: only a label) */
	int status;                /* its wait status, for WIFEXITED(),
	                              WEXITSTATUS(), WIFSIGNALED(), WTERMSIG();
	                              -1 when the status was lost */
	const struct errgroup_error *error;   /* NULL when the task succeeded,
	                                         else its entry in the error
	                                         list */
};

/*
 * errgroup_fd - a file descriptor that is readable while ended tasks wait
 * to be taken by errgroup_reap, for the caller's own poll/epoll loop.  From
 * the first call on, the group records every task that ends, successfully
 * or not, and it reaps its children in a supervisor thread, so that they
 * are noticed while the caller waits in its own loop.  The fd belongs to
 * the group (never close it) and stays the same until errgroup_free.
 * Returns the fd, or -EMFILE, -ENFILE, -ENOMEM (no fd), -EAGAIN (no
 * thread), -ECHILD.
 */
int errgroup_fd(errgroup *g);

/*
 * errgroup_reap - take the next ended task, in the order they ended, once
 * errgroup_fd has been called.  Never blocks.  Returns 1 with *ret filled
 * in, 0 when no ended task is waiting (more may come: wait for errgroup_fd
 * to turn readable), -EINVAL if errgroup_fd was never called, -ECHILD.
 * ret->error stays valid until errgroup_free.
 */
int errgroup_reap(errgroup *g, struct errgroup_exit *ret);

/* errgroup_error_count - how many tasks have failed so far. */
size_t errgroup_error_count(const errgroup *g);

/*
 * errgroup_error_at - the i-th error in the order the parent recorded them;
 * index 0 is what errgroup_wait returns.  NULL when i is out of range.  The
 * pointers stay valid until errgroup_free.
 */
const struct errgroup_error *errgroup_error_at(const errgroup *g, size_t i);

/*
 * errgroup_cancel - stop the group now: every running child's process group
 * gets SIGTERM (and SIGCONT, so that a stopped child sees it), then SIGKILL
 * after the grace period, and a child that has left its process group
 * gets them too (each signal once).  The grace is timed by the group's
 * supervisor thread, started now if the group has none; if no thread can
 * be started, the SIGKILL follows the SIGTERM at once.  errgroup_go, also
 * blocked ones, returns -ECANCELED from now on.  Cancellation is final,
 * also after wait.  A child that then ends unsuccessfully is recorded with
 * cause ERRGROUP_CANCELED; one that had already exited, even if not yet
 * reaped, is neither signalled nor counted as canceled: its own result
 * stands.
 */
void errgroup_cancel(errgroup *g);

/*
 * errgroup_signal - send sig to every child still running: its whole
 * process group, and the child itself if it left that group, as
 * errgroup_cancel sends its SIGTERM.  For passing on a signal
 * the caller received (SIGHUP to make every task reload, say), and for
 * job control: SIGSTOP suspends every task with all it started, SIGCONT
 * resumes them.  It is not a cancellation: the group goes on, and a child
 * that the signal ends fails with cause ERRGROUP_SIGNALED.  A child that
 * has already exited, even if not yet reaped, is left out, and so is one
 * whose start another thread has not finished when the call comes.  The
 * group's own timers run on while its tasks are stopped, and a task
 * stopped when the group cancels it or its time runs out gets SIGCONT
 * after the SIGTERM, so that it sees it.  sig 0 sends nothing and counts
 * the running children.  SIGRTMIN is the start gate's signal (a child
 * waits for it before it runs its task, and drops any that follow): a
 * SIGRTMIN sent to a task that has not yet begun its function is lost,
 * and so is a SIGTSTP, SIGTTIN or SIGTTOU that comes before the child has
 * its own process group (it drops the terminal's stops sent to the
 * caller's group while it was still in it; SIGSTOP is never lost).
 * A task that moved into a sibling task's process group gets the signal
 * twice, once directly and once through that group.  It takes the
 * group's lock: not from a signal handler (pass the signal on from a
 * signalfd or a self-pipe instead).  Returns how many children it sent
 * the signal to, or -EINVAL (sig is not a signal number), -ECHILD.
 */
int errgroup_signal(errgroup *g, int sig);

/*
 * errgroup_free - SIGKILL every child still running (its whole process
 * group, and the child itself if it left that group), reap them, and
 * release the group.  Never leaves a zombie.
 * errgroup_free(NULL) does nothing.  No other call on g may run or follow.
 */
void errgroup_free(errgroup *g);

/*
 * errgroup_errorf - in a task: set the message the parent will see if the
 * task fails, and return code, so that a task can end with
 *     return errgroup_errorf(2, "cannot open %s", path);
 * The message is sent at once, so it survives a later crash; the last one
 * sent wins.  A message of up to ERRGROUP_MESSAGE_MAX bytes arrives intact;
 * a longer one is cut there and ends with "[... message truncated: N bytes]"
 * (N is "more than 2147483647" past what vsnprintf can count, "more than
 * 65536" when a conversion failed past the limit).
 * Outside a task, a child that a task forks included, it only returns
 * code.
 */
#define ERRGROUP_MESSAGE_MAX 65536
int errgroup_errorf(int code, const char *fmt, ...) ERRGROUP_PRINTF(2, 3);

#ifdef __cplusplus
}
#endif

#endif
