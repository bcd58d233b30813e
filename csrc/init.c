/*
 * zoned-init: a minimal PID 1 for `zoned run --init`.
 *
 * Usage: zoned-init [--] CMD [ARGS...]
 *
 * A container's PID 1 has two jobs the application usually does not do:
 * reap orphaned zombies (they are reparented to PID 1) and act on signals
 * (the kernel drops signals sent to a namespace's init unless it has a
 * handler, so `docker stop`-style SIGTERM would otherwise be lost).
 *
 * Design (like tini/catatonit):
 *  - all catchable, asynchronous signals are blocked and consumed with
 *    sigwaitinfo(), so there are no handlers and no races with SIGCHLD;
 *  - the child gets its own process group and, if stdin is a terminal,
 *    becomes its foreground process group (so ^C from the tty reaches it);
 *  - signals received by init are forwarded to the child's PID only (not
 *    to its process group, unlike `tini -g`): the child decides whether to
 *    pass them on to its own children, just as a shell would;
 *  - when the child exits, init exits with its status: the exit code, or
 *    128+N if it was killed by signal N.  The kernel then SIGKILLs anything
 *    left in the pid namespace.
 *
 * It must be linked statically: the container image may have no libc.
 *   cc -static -Os -s -Wall -o zoned/libexec/zoned-init csrc/init.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Signals that report a fault in this process itself: never block them. */
static const int sync_signals[] = {
	SIGABRT, SIGBUS, SIGFPE, SIGILL, SIGSEGV, SIGSYS, SIGTRAP,
};

static int status_to_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 1;
}

/* Runs in the forked child: undo init's signal setup, then exec CMD. */
static void exec_child(char **argv, const sigset_t *oldmask)
{
	int sig, err;

	/* Own process group, and the foreground one on a terminal.  This is
	 * done while every signal is still blocked: tcsetpgrp() from a
	 * background group would otherwise stop us with SIGTTOU. */
	setpgid(0, 0);
	if (isatty(STDIN_FILENO))
		tcsetpgrp(STDIN_FILENO, getpgrp()); /* ENOTTY if not our ctty */

	for (sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL); /* EINVAL for KILL/STOP/libc-internal */
	sigprocmask(SIG_SETMASK, oldmask, NULL);

	execvp(argv[0], argv);
	err = errno;
	dprintf(STDERR_FILENO, "zoned-init: exec %s: %s\n", argv[0],
		strerror(err));
	_exit(err == EACCES ? 126 : 127);
}

int main(int argc, char **argv)
{
	sigset_t all, oldmask;
	siginfo_t info;
	pid_t child, pid;
	int i, sig, status;

	argv++;
	argc--;
	if (argc > 0 && strcmp(argv[0], "--") == 0) {
		argv++;
		argc--;
	}
	if (argc < 1) {
		dprintf(STDERR_FILENO, "usage: zoned-init [--] CMD [ARGS...]\n");
		return 2;
	}

	/* Not PID 1 (e.g. run without a pid namespace): still adopt orphans. */
	if (getpid() != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		dprintf(STDERR_FILENO, "zoned-init: subreaper: %s\n",
			strerror(errno));

	/* An inherited SIG_IGN for SIGCHLD would make the kernel auto-reap
	 * the child and we would never learn its exit status. */
	signal(SIGCHLD, SIG_DFL);

	sigfillset(&all);
	for (i = 0; i < (int)(sizeof(sync_signals) / sizeof(sync_signals[0])); i++)
		sigdelset(&all, sync_signals[i]);
	if (sigprocmask(SIG_BLOCK, &all, &oldmask) < 0) {
		dprintf(STDERR_FILENO, "zoned-init: sigprocmask: %s\n",
			strerror(errno));
		return 1;
	}

	child = fork();
	if (child < 0) {
		dprintf(STDERR_FILENO, "zoned-init: fork: %s\n", strerror(errno));
		return 1;
	}
	if (child == 0)
		exec_child(argv, &oldmask);

	for (;;) {
		sig = sigwaitinfo(&all, &info);
		if (sig < 0) {
			if (errno == EINTR) /* e.g. after SIGSTOP/SIGCONT */
				continue;
			dprintf(STDERR_FILENO, "zoned-init: sigwaitinfo: %s\n",
				strerror(errno));
			return 1;
		}
		if (sig != SIGCHLD) {
			/* ESRCH just means the child is already gone; its
			 * SIGCHLD is pending and handled next iteration. */
			kill(child, sig);
			continue;
		}
		/* SIGCHLD is not queued per child: reap every zombie now. */
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			if (pid == child)
				return status_to_code(status);
		}
	}
}
