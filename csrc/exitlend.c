/*
 * The CLI's exit without waiting for the kernel to free its memory (zoned.cli.console).
 *
 * A process's exit frees its address space before its parent can learn that it exited:
 * for a `zoned run` (a Python heap of ~2,000 pages, each unmapped and freed) that took
 * ~1.3 ms here, on the caller's path. If another process shares the memory (CLONE_VM),
 * the exit only drops a reference, and that process, the holder, frees it afterwards.
 *
 * The holder runs nothing but the syscalls below on a static stack: it shares our memory,
 * so it must not touch Python's. It holds none of our fds but the O_PATH ones we name
 * (zoned.linux.lastref: inodes we removed, freed when it goes, with the device's trim of
 * their blocks); the rest are closed before it is made, so a pipe to our stdout or a lock
 * of ours ends with us, never later (an O_PATH fd can be neither). Every signal it could
 * catch is blocked (a handler of Python's would run in it), it is not traced
 * (CLONE_UNTRACED), and it dies by SIGKILL when we do (PR_SET_PDEATHSIG; checked against
 * an exit before it was set). It is re-parented then, as any orphan, to the nearest child
 * subreaper or init, which reaps it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "keepfds.h"

#ifndef CLONE_UNTRACED
#define CLONE_UNTRACED 0x00800000
#endif

static char exitlend_stack[16384] __attribute__((aligned(16)));
static pid_t exitlend_parent;

static int exitlend_holder(void *arg)
{
    (void)arg;
    syscall(SYS_prctl, PR_SET_NAME, (unsigned long)"zoned-exit", 0, 0, 0);
    syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (syscall(SYS_getppid) != exitlend_parent)
        syscall(SYS_exit, 0);  /* we were gone before the death signal was set */
    for (;;)
        syscall(SYS_pause);
    return 0;
}

void z_exit_lending_memory(int status, const int *keep, int nkeep)
{
    sigset_t all;
    sigfillset(&all);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, NULL, _NSIG / 8);
    z_close_all_but_o_path(keep, nkeep);
    exitlend_parent = (pid_t)syscall(SYS_getpid);
    /* exit signal 0: nobody is told of its end but its reaper */
    clone(exitlend_holder, exitlend_stack + sizeof exitlend_stack, CLONE_VM | CLONE_UNTRACED,
          NULL);
    _exit(status);  /* with or without a holder (clone may fail: pids.max, seccomp) */
}
