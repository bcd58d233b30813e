/*
 * z_fork_exec_start: start a container's init set up in C (csrc/setup.c). The child execs
 * zoned-spawn at once, so it need not be a copy of the caller: it is made as posix_spawn
 * makes its children, sharing the caller's memory (CLONE_VM) until its exec. Then no page
 * table of the caller (a python of 30-60 MB) is copied and no page of it is copied on a
 * write afterwards, on either side, where a fork costs both (bench/README, finding 22).
 * Unlike posix_spawn, the caller does not sleep until that exec (CLONE_VFORK) but goes on
 * (finding 29): see z_fork_exec_start.
 *
 * Where the init must start in its cgroup2 cgroup (CLONE_INTO_CGROUP, zoned.cgroups.join),
 * only clone3 can make it, and clone3 with a stack of its own needs the few instructions
 * below (x86-64); elsewhere that case falls back to clone3 as fork. Without a cgroup it is
 * libc's clone(), which seccomp profiles that deny clone3 (docker's) allow.
 */
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <linux/futex.h>

struct z_exec_args {
    const int *keep;
    int nkeep, exe_fd, sock;
    const char *path;
    char *const *argv, *const *envp;
};

#if defined(__x86_64__)
/* A system call that returns -errno and writes nothing else: the child runs while the
 * caller does (z_fork_exec_start), on the caller's thread-local storage, so it must not
 * set the caller's errno as libc's wrappers do. */
static long z_raw_syscall(long nr, long a1, long a2, long a3, long a4, long a5)
{
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    long ret;

    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return ret;
}
#define Z_EXEC_CONCURRENT 1
#else
/* Elsewhere the caller waits for the exec (CLONE_VFORK), so libc's errno is the child's. */
static long z_raw_syscall(long nr, long a1, long a2, long a3, long a4, long a5)
{
    long ret = syscall(nr, a1, a2, a3, a4, a5);
    return ret < 0 ? -errno : ret;
}
#define Z_EXEC_CONCURRENT 0
#endif

/* In the child: the fds in `keep` inherited, exec; on failure, say so on `sock`. Only
 * raw system calls: it shares the caller's memory, thread-local storage and a threaded
 * caller's locks, and runs while the caller goes on. */
static int z_child_exec(void *p)
{
    static const char head[] = "{\"op\":\"error\",\"message\":\"cannot run zoned-spawn: errno ";
    const struct z_exec_args *a = p;
    char msg[sizeof(head) + 32], num[12];
    int n = (int)sizeof(head) - 1, digits = 0;
    long err;

    for (int i = 0; i < a->nkeep; i++)
        if (z_raw_syscall(SYS_fcntl, a->keep[i], F_SETFD, 0, 0, 0) < 0)
            z_raw_syscall(SYS_exit, 127, 0, 0, 0, 0);
    if (a->exe_fd >= 0)
        err = -z_raw_syscall(SYS_execveat, a->exe_fd, (long)"", (long)a->argv, (long)a->envp,
                             AT_EMPTY_PATH);
    else
        err = -z_raw_syscall(SYS_execve, (long)a->path, (long)a->argv, (long)a->envp, 0, 0);
    memcpy(msg, head, (size_t)n);
    do {
        num[digits++] = (char)('0' + err % 10);
        err /= 10;
    } while (err && digits < 11);
    while (digits)
        msg[n++] = num[--digits];
    memcpy(msg + n, "\",\"errno\":0}", 12);
    n += 12;
    z_raw_syscall(SYS_sendto, a->sock, (long)msg, n, MSG_NOSIGNAL, 0);  /* else EOF */
    z_raw_syscall(SYS_exit, 127, 0, 0, 0, 0);
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
 * What a child started by z_fork_exec_start runs on until its exec: its stack, its
 * arguments and their strings, copied into one mapping of the caller's that it shares
 * (CLONE_VM), and the word the kernel clears and wakes when the child's memory becomes
 * its own (CLONE_CHILD_CLEARTID: at its exec, or its exit). z_fork_exec_finish waits for
 * that word and unmaps it.
 */
struct z_exec_pending {
    volatile int tid;
    size_t size;
    struct z_exec_args a;
};

#define Z_EXEC_STACK 16384

static char *z_copy_str(char **at, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = *at;
    memcpy(d, s, n);
    *at += n;
    return d;
}

/*
 * Start zoned-spawn (exe_fd, its sealed copy, if >= 0; else `path`) with the fds in `keep`
 * inherited: flags CLONE_PARENT, or CLONE_INTO_CGROUP with cgroup_fd. Unlike posix_spawn
 * (CLONE_VFORK), the caller does not sleep until the child's exec: it goes on with its own
 * work on its CPU while the child execs on another, and calls z_fork_exec_finish(*pending)
 * later. A caller put to sleep was woken by the exec onto the child's CPU, behind the
 * child's whole set-up (0.5-1 ms on two CPUs; bench/README, finding 29). Until the finish
 * the child shares the caller's memory: the caller keeps itself undumpable meanwhile and
 * must call the finish on every path. The child's exec failure is said on `sock`
 * ({"op":"error"}) and it exits 127. Signals stay blocked in the child (the caller's
 * handlers must not run on shared memory); the init unblocks them. Returns the pid, or -1
 * with errno (and nothing pending).
 */
int z_fork_exec_start(unsigned long long flags, int cgroup_fd, int exe_fd, const char *path,
                      const int *keep, int nkeep, char *const argv[], char *const envp[],
                      int sock, void **pending)
{
    struct z_exec_pending *p;
    size_t size = sizeof(*p) + (size_t)nkeep * sizeof(int) + Z_EXEC_STACK + 64;
    int argc = 0, envc = 0, err;
    sigset_t all, old;
    char *strings, *stack_top;
    char **cargv, **cenv;
    int *ckeep;
    long pid;

    while (argv[argc])
        size += sizeof(char *) + strlen(argv[argc++]) + 1;
    while (envp[envc])
        size += sizeof(char *) + strlen(envp[envc++]) + 1;
    size += 2 * sizeof(char *) + (path ? strlen(path) + 1 : 0);
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    p->tid = 1;
    p->size = size;
    stack_top = (char *)(((uintptr_t)p + size) & ~(uintptr_t)15);
    cargv = (char **)(p + 1);
    cenv = cargv + argc + 1;
    ckeep = (int *)(cenv + envc + 1);
    strings = (char *)(ckeep + nkeep);
    for (int i = 0; i < argc; i++)
        cargv[i] = z_copy_str(&strings, argv[i]);
    cargv[argc] = NULL;
    for (int i = 0; i < envc; i++)
        cenv[i] = z_copy_str(&strings, envp[i]);
    cenv[envc] = NULL;
    memcpy(ckeep, keep, (size_t)nkeep * sizeof(int));
    p->a = (struct z_exec_args){ckeep, nkeep, exe_fd, sock,
                                path ? z_copy_str(&strings, path) : NULL, cargv, cenv};

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (flags & CLONE_INTO_CGROUP) {
        struct clone_args args;
        memset(&args, 0, sizeof(args));
        args.exit_signal = (flags & CLONE_PARENT) ? 0 : SIGCHLD;
        args.cgroup = (uint64_t)cgroup_fd;
#if defined(__x86_64__)
        args.flags = flags | CLONE_VM | CLONE_CHILD_CLEARTID;
        args.child_tid = (uint64_t)(uintptr_t)&p->tid;
        args.stack = (uint64_t)(uintptr_t)(stack_top - Z_EXEC_STACK);
        args.stack_size = Z_EXEC_STACK;
        pid = z_clone3_call(&args, z_child_exec, &p->a);
        if (pid < 0) {
            errno = (int)-pid;
            pid = -1;
        }
#else
        args.flags = flags;
        pid = syscall(SYS_clone3, &args, sizeof(args));
        if (pid == 0)
            z_child_exec(&p->a);
        if (pid > 0)
            p->tid = 0;  /* a copy, not a sharer: nothing to wait for */
#endif
    } else {
        pid = clone(z_child_exec, stack_top,
                    CLONE_VM | CLONE_CHILD_CLEARTID | (int)(flags & CLONE_PARENT) | SIGCHLD |
                    (Z_EXEC_CONCURRENT ? 0 : CLONE_VFORK), &p->a, NULL, NULL, &p->tid);
    }
    err = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        munmap(p, size);
        errno = err;
        return -1;
    }
    *pending = p;
    return (int)pid;
}

/* Wait until the child of z_fork_exec_start no longer shares our memory (it has exec'd or
 * exited), then free what it ran on. Already so, as a rule, by the time the caller asks. */
void z_fork_exec_finish(void *pending)
{
    struct z_exec_pending *p = pending;

    while (p->tid != 0)
        syscall(SYS_futex, &p->tid, FUTEX_WAIT, 1, NULL, NULL, 0);
    munmap(p, p->size);
}
