/*
 * z_fork_exec: start a container's init set up in C (csrc/setup.c). The child execs
 * zoned-spawn at once, so it need not be a copy of the caller: it is made as posix_spawn
 * makes its children, sharing the caller's memory (CLONE_VM) while the caller waits
 * (CLONE_VFORK) the few microseconds until its exec. Then no page table of the caller (a
 * python of 30-60 MB) is copied and no page of it is copied on a write afterwards, on
 * either side, where a fork costs both (bench/README, finding 22).
 *
 * Where the init must start in its cgroup2 cgroup (CLONE_INTO_CGROUP, zoned.cgroups.join),
 * only clone3 can make it, and clone3 with a stack of its own needs the few instructions
 * below (x86-64); elsewhere that case falls back to clone3 as fork. Without a cgroup it is
 * libc's clone(), which seccomp profiles that deny clone3 (docker's) allow.
 */
#include <sched.h>
#include <signal.h>

struct z_exec_args {
    const int *keep;
    int nkeep, exe_fd, sock;
    const char *path;
    char *const *argv, *const *envp;
};

/* In the child: the fds in `keep` inherited, exec; on failure, say so on `sock`. Only
 * system calls (it shares the caller's memory, and a threaded caller's locks). */
static int z_child_exec(void *p)
{
    static const char head[] = "{\"op\":\"error\",\"message\":\"cannot run zoned-spawn: errno ";
    const struct z_exec_args *a = p;
    char msg[sizeof(head) + 32], num[12];
    int err, n = (int)sizeof(head) - 1, digits = 0;

    for (int i = 0; i < a->nkeep; i++)
        if (fcntl(a->keep[i], F_SETFD, 0) < 0)
            _exit(127);
    if (a->exe_fd >= 0)
        syscall(SYS_execveat, a->exe_fd, "", a->argv, a->envp, AT_EMPTY_PATH);
    else
        syscall(SYS_execve, a->path, a->argv, a->envp);
    err = errno;
    memcpy(msg, head, (size_t)n);
    do {
        num[digits++] = (char)('0' + err % 10);
        err /= 10;
    } while (err && digits < 11);
    while (digits)
        msg[n++] = num[--digits];
    memcpy(msg + n, "\",\"errno\":0}", 12);
    n += 12;
    if (send(a->sock, msg, (size_t)n, MSG_NOSIGNAL) < 0) {
        /* zoned reads EOF */
    }
    syscall(SYS_exit, 127);
    return 127;
}

#if defined(__x86_64__)
/* clone3 whose child runs fn(arg) on the stack args->stack names, then exits. */
static long z_clone3_call(struct clone_args *args, int (*fn)(void *), void *arg)
{
    register long rax __asm__("rax") = SYS_clone3;
    register void *rdi __asm__("rdi") = args;
    register long rsi __asm__("rsi") = (long)sizeof(*args);
    register int (*r12)(void *) __asm__("r12") = fn;
    register void *r13 __asm__("r13") = arg;
    __asm__ volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        "xor %%ebp, %%ebp\n\t"       /* the child: its own stack, no frame above */
        "mov %%r13, %%rdi\n\t"
        "call *%%r12\n\t"
        "mov %%eax, %%edi\n\t"
        "mov $60, %%eax\n\t"         /* exit */
        "syscall\n\t"
        "hlt\n"
        "1:"
        : "+r"(rax)
        : "r"(rdi), "r"(rsi), "r"(r12), "r"(r13)
        : "rcx", "r11", "memory");
    return rax;
}
#endif

/*
 * Start zoned-spawn (exe_fd, its sealed copy, if >= 0; else `path`) with the fds in `keep`
 * inherited: flags CLONE_PARENT, or CLONE_INTO_CGROUP with cgroup_fd. The child's exec
 * failure is said on `sock` ({"op":"error"}) and it exits 127. Signals stay blocked in
 * the child (the caller's handlers must not run on shared memory); the init unblocks
 * them. Returns the pid, or -1 with errno.
 */
int z_fork_exec(unsigned long long flags, int cgroup_fd, int exe_fd, const char *path,
                const int *keep, int nkeep, char *const argv[], char *const envp[], int sock)
{
    struct z_exec_args a = {keep, nkeep, exe_fd, sock, path, argv, envp};
    char stack[16384] __attribute__((aligned(16)));  /* the child's, until its exec */
    sigset_t all, old;
    long pid;
    int err;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (flags & CLONE_INTO_CGROUP) {
        struct clone_args args;
        memset(&args, 0, sizeof(args));
        args.exit_signal = (flags & CLONE_PARENT) ? 0 : SIGCHLD;
        args.cgroup = (uint64_t)cgroup_fd;
#if defined(__x86_64__)
        args.flags = flags | CLONE_VM | CLONE_VFORK;
        args.stack = (uint64_t)(uintptr_t)stack;
        args.stack_size = sizeof(stack);
        pid = z_clone3_call(&args, z_child_exec, &a);
        if (pid < 0) {
            errno = (int)-pid;
            pid = -1;
        }
#else
        args.flags = flags;
        pid = syscall(SYS_clone3, &args, sizeof(args));
        if (pid == 0)
            z_child_exec(&a);
#endif
    } else {
        pid = clone(z_child_exec, stack + sizeof(stack),
                    CLONE_VM | CLONE_VFORK | (int)(flags & CLONE_PARENT) | SIGCHLD, &a);
    }
    err = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = err;
    return (int)pid;
}
