/*
 * zoned-vmwrap: QEMU's parent, for every VM zoned starts. It runs QEMU as its child and
 * exits with the *guest's* exit code, which the guest's init wrote to the VM's ctl file
 * ("exit N"): QEMU itself exits 0 when the guest ends, whatever the container's process
 * returned. An OCI client (podman's conmon, containerd's shim) sees it as the container's
 * init; for zoned's own detached VMs it records how QEMU ended, which nothing else could
 * (QEMU is nobody else's child once zoned has returned).
 *
 *   zoned-vmwrap [--go FD] [--status FILE] [--pid-file FILE] [--caps HEX]
 *                [--jail DIR [--ro|--rw|--dev PATH]...]
 *                CTL_PATH QEMU ARGS...
 *
 * --go FD: QEMU is started once a byte arrives on FD: the caller moves this process into
 *   the VM's cgroups first, so QEMU starts in them (a process forked before that move
 *   would stay in the caller's). EOF first: no QEMU, exit 125.
 * --status FILE: made and locked (flock) before QEMU starts; once QEMU has ended, its end
 *   is written there ("signal N" when a signal ended it: one that killed QEMU, or one
 *   this wrapper passed on to it; else "exit N", QEMU's own code) and the lock goes with
 *   this process. A reader that finds QEMU gone takes the lock, then reads the last word.
 *
 * The ctl file is written by zoned-vmlog from a pipe QEMU writes (zoned/vm/vmlog.py): this
 * process closes its own copies of QEMU's fds once QEMU runs, and after QEMU's exit waits
 * for zoned-vmlog's lock on ctl, so the guest's last line is read once it is written.
 *
 * --caps HEX: QEMU keeps only these capabilities (a mask, bit N: capability N), and
 *   runs with no_new_privs: the bounding, inheritable and ambient sets are cut before its
 *   exec, so an exploited QEMU (it parses the guest's devices and a saved VM's stream)
 *   cannot load modules, mount, ptrace zoned or reconfigure the host's network, as
 *   libvirt's and Kata's QEMUs cannot; nor ptrace another QEMU (reach_no_other_process).
 *   Fails closed: no QEMU (exit 125) if a drop fails.
 *
 * --jail DIR, with --ro PATH, --rw PATH, --dev PATH (each repeated): QEMU runs in a
 *   mount namespace of its own whose root is a tmpfs mounted on DIR (an empty directory),
 *   holding only those paths, bound at their own names (read-only; read-write; device
 *   nodes), a /proc of its own directory only (/proc/self), an empty /tmp. A top-level
 *   symlink given as --ro (/lib -> usr/lib) is made again as that symlink. What QEMU
 *   could reach as root (every file root owns, the host's unix sockets, other processes'
 *   /proc) is then only what it needs. Fails closed.
 *
 *   QEMU is PID 1 of a pid namespace of its own then (signals it has no handler for,
 *   QUIT, USR1 and USR2, do nothing to it), in an empty network namespace of its own (its
 *   taps must come as fds: -netdev tap,fd=N).
 *
 * --pid-file PATH: QEMU's pid, as the host sees it, written there once it is forked
 *   (made O_EXCL: the caller removed any old one). A jailed QEMU's own -pidfile would
 *   say 1.
 *
 * TERM, INT, HUP, QUIT, USR1 and USR2 are passed on to QEMU. If QEMU ends without the
 * guest having reported (a crash, SIGKILL), the exit status is 128+signal or QEMU's own.
 * Static and tiny: one per VM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <limits.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile pid_t child;
static volatile sig_atomic_t passed_on;	/* the last signal passed on to QEMU */

static void forward(int sig)
{
    pid_t to = child;  /* 0 once QEMU has ended: nothing is passed on then */

    if (to > 0 && kill(to, sig) == 0)
        passed_on = sig;
}

static void on_alarm(int sig)
{
    (void)sig;	/* only interrupts the flock below */
}

/* N of a whole line "exit N" (1 to 3 digits, at most 255), else -1 (-2: not an exit
 * line at all). The last exit line decides, a bad one meaning none: what
 * zoned.vm.machine._exit_line takes, so an OCI client and `zoned state` agree. */
static int exit_line(const char *line, ssize_t len)
{
    int code = 0;
    ssize_t i;

    if (len > 0 && line[len - 1] == '\n')
        len--;
    if (len < 5 || strncmp(line, "exit ", 5) != 0)
        return -2;
    if (len < 6 || len > 8)
        return -1;
    for (i = 5; i < len; i++) {
        if (line[i] < '0' || line[i] > '9')
            return -1;
        code = code * 10 + (line[i] - '0');
    }
    return code <= 255 ? code : -1;
}

/* The last "exit N" line of the ctl file, or -1; read once zoned-vmlog has written all
 * (it holds ctl locked until then; 5 s at most). zoned-vmlog keeps the file under 64
 * KiB, so a line read whole is bounded. */
static int guest_status(const char *path)
{
    /* Not through a symlink, nor waiting on a FIFO: the VM's dir is QEMU's to write */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    FILE *f = NULL;
    struct sigaction sa;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int code = -1, n;

    if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || !(f = fdopen(fd, "r"))))
        close(fd);
    if (!f)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    alarm(5);
    flock(fileno(f), LOCK_SH);
    alarm(0);
    while ((len = getline(&line, &cap, f)) >= 0)
        if ((n = exit_line(line, len)) != -2)
            code = n;
    free(line);
    fclose(f);
    return code;
}

/* Waits for the go byte on fd; 0 once it came, -1 on EOF or an error. */
static int wait_go(int fd)
{
    char c;
    ssize_t n;

    do
        n = read(fd, &c, 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    return n == 1 ? 0 : -1;
}

static void write_status(int fd, int status)
{
    char buf[32];
    int n;

    if (fd < 0)
        return;
    if (WIFSIGNALED(status))
        n = snprintf(buf, sizeof(buf), "signal %d\n", WTERMSIG(status));
    else if (passed_on && WEXITSTATUS(status) == 0)  /* QEMU ends cleanly on TERM, INT, HUP */
        n = snprintf(buf, sizeof(buf), "signal %d\n", (int)passed_on);
    else
        n = snprintf(buf, sizeof(buf), "exit %d\n", WEXITSTATUS(status));
    if (write(fd, buf, (size_t)n) != n)
        return;  /* the reader finds no word: an unknown end, as before */
}

/* Cut this process's capabilities to `keep` for good (see --caps); 0 or -1 (errno). As
 * root's exec gives a program the bounding set, the bounding set is what is cut. */
static int keep_only_caps(unsigned long long keep)
{
    struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    int c, i;

    for (c = 0; c < 64; c++)  /* (EINVAL: past this kernel's last capability) */
        if (!(keep & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 &&
                errno != EINVAL)
            return -1;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        return -1;
    if (syscall(SYS_capget, &head, data) < 0)
        return -1;
    for (i = 0; i < 2; i++) {
        unsigned int k = (unsigned int)(keep >> (32 * i));

        data[i].effective &= k;
        data[i].permitted &= k;
        data[i].inheritable = 0;
    }
    if (syscall(SYS_capset, &head, data) < 0)
        return -1;
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

/* A filter under QEMU's own (-sandbox), loaded with no_new_privs: another QEMU is uid 0
 * too, with no more capabilities, so ptrace and its kin would reach into it (there is no
 * Yama here to stop that). Those calls fail with EPERM; a syscall of another ABI (i386's
 * int 0x80 numbers its ptrace 26), and an x32 one, fails with ENOSYS. x86_64 only: the
 * VM backend is qemu-system-x86_64 on x86_64. */
static int reach_no_other_process(void)
{
#ifdef __x86_64__
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),  /* x32 */
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ptrace, 4, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_vm_readv, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_vm_writev, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_pidfd_getfd, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
    };
    struct sock_fprog prog = {sizeof(code) / sizeof(code[0]), code};

    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
#else
    return 0;
#endif
}

#define MAX_JAIL_PATHS 64
#define PROC_FLAGS (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)

struct jail_path {
    char kind;  /* 'r' read-only, 'w' read-write, 'd' a device node */
    const char *path;
};

/* mkdir -p of `path`'s parent directories (absolute, inside the jail). */
static int make_parents(char *path)
{
    for (char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
        *p = 0;
        int rc = mkdir(path, 0755);
        *p = '/';
        if (rc < 0 && errno != EEXIST)
            return -1;
    }
    return 0;
}

/* `path` of the host, at the same name under `jail` (see --jail). */
static int jail_bind(const char *jail, const struct jail_path *j)
{
    char target[PATH_MAX], link[PATH_MAX];
    struct stat st;
    unsigned long flags = MS_REMOUNT | MS_BIND | MS_NOSUID;
    ssize_t n;
    int fd;

    if (j->path[0] != '/' || snprintf(target, sizeof(target), "%s%s", jail, j->path) >=
            (int)sizeof(target) || lstat(j->path, &st) < 0 || make_parents(target) < 0)
        return -1;
    if (S_ISLNK(st.st_mode) && (j->kind != 'r' || strchr(j->path + 1, '/'))) {
        if (stat(j->path, &st) < 0)  /* deeper: bound where it leads, at its own name */
            return -1;
    } else if (S_ISLNK(st.st_mode)) {  /* at the top (/lib -> usr/lib): made again */
        n = readlink(j->path, link, sizeof(link) - 1);
        if (n < 0)
            return -1;
        link[n] = 0;
        return symlink(link, target);
    }
    if (S_ISDIR(st.st_mode)) {
        if (mkdir(target, 0755) < 0 && errno != EEXIST)
            return -1;
    } else {
        fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
            return -1;
        close(fd);
    }
    if ((j->kind == 'd') != (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)))
        return errno = EINVAL, -1;  /* a device as --dev, only there */
    /* Recursive, but for a path the jail lies beneath (the VM's dir): not into itself */
    size_t len = strlen(j->path);
    int holds_jail = strncmp(jail, j->path, len) == 0 && jail[len] == '/';

    if (mount(j->path, target, NULL, MS_BIND | (holds_jail ? 0 : MS_REC), NULL) < 0)
        return -1;
    if (j->kind == 'r')
        flags |= MS_RDONLY | MS_NODEV;
    else if (j->kind == 'w')
        flags |= MS_NODEV;
    else
        flags |= MS_NOEXEC;
    return mount(NULL, target, NULL, flags, NULL);
}

/* QEMU's root (see --jail); 0 or -1 with errno, `what` naming the step. */
static int enter_jail(const char *jail, const struct jail_path *paths, int n,
                      const char **what)
{
    char dir[PATH_MAX], self[PATH_MAX], target[PATH_MAX];

    /* Its network namespace too, empty: its taps come as fds (zoned's open_tap), its
     * sockets are unix ones in the VM's dir; no host TCP service or abstract socket. */
    *what = "mount and network namespaces";
    if (unshare(CLONE_NEWNS | CLONE_NEWNET) < 0 ||
            mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
        return -1;
    *what = "tmpfs";
    if (mount("tmpfs", jail, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=1m") < 0)
        return -1;
    /* /proc/self alone: this process's own directory (QEMU is it after the exec), bound
     * from a procfs mounted aside for the while; no other process is named there. */
    *what = "/proc";
    if (snprintf(dir, sizeof(dir), "%s/.proc", jail) >= (int)sizeof(dir) ||
            mkdir(dir, 0500) < 0 ||  /* (no MS_RDONLY: before 5.8 this is the host's sb) */
            mount("proc", dir, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0 ||
            snprintf(self, sizeof(self), "%s/%d", dir, (int)getpid()) >= (int)sizeof(self) ||
            snprintf(target, sizeof(target), "%s/proc", jail) >= (int)sizeof(target) ||
            mkdir(target, 0555) < 0 ||
            snprintf(target, sizeof(target), "%s/proc/self", jail) >= (int)sizeof(target) ||
            mkdir(target, 0555) < 0 || mount(self, target, NULL, MS_BIND, NULL) < 0 ||
            mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | PROC_FLAGS, NULL) < 0 ||
            umount2(dir, MNT_DETACH) < 0 || rmdir(dir) < 0)
        return -1;
    *what = "/tmp";
    if (snprintf(dir, sizeof(dir), "%s/tmp", jail) >= (int)sizeof(dir) ||
            (mkdir(dir, 01777) < 0 && errno != EEXIST) ||
            mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=16m") < 0)
        return -1;
    for (int i = 0; i < n; i++) {  /* (after /tmp: a path there is bound in its tmpfs) */
        *what = paths[i].path;
        if (jail_bind(jail, &paths[i]) < 0)
            return -1;
    }
    *what = "the jail's read-only root";
    if (mount(NULL, jail, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "mode=0755,size=1m") < 0)
        return -1;
    *what = "pivot_root";
    if (chdir(jail) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 ||
            umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
        return -1;
    return 0;
}

static void close_from_except(int from, int keep)
{
    if (keep >= from) {
        if (keep > from)
            syscall(SYS_close_range, (unsigned)from, (unsigned)keep - 1, 0U);
        from = keep + 1;
    }
    if (syscall(SYS_close_range, (unsigned)from, ~0U, 0U) < 0)
        for (int fd = from; fd < 1024; fd++)
            if (fd != keep)
                close(fd);
}

/* Every fd from 3 on but `a` and `b` (either may be -1) closed. */
static void close_all_but(int a, int b)
{
    int lo = a < b ? a : b, hi = a < b ? b : a;

    if (lo < 3) {
        close_from_except(3, hi);
        return;
    }
    if (lo > 3)
        syscall(SYS_close_range, 3U, (unsigned)lo - 1, 0U);
    close_from_except(lo + 1, hi);
}

/* QEMU's pid (as this process sees it) into `path`, made anew: zoned reads it there. */
static int write_pid_file(const char *path, pid_t pid)
{
    char buf[24];
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    int n = snprintf(buf, sizeof(buf), "%d\n", (int)pid), ok;

    if (fd < 0)
        return -1;
    ok = write(fd, buf, (size_t)n) == n;
    return close(fd) == 0 && ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
    struct sigaction sa;
    siginfo_t end;
    pid_t parent;
    int status, code, go = -1, status_fd = -1, arg = 1, cut_caps = 0;
    unsigned long long caps = 0;
    char *end_of_caps;
    const char *jail = NULL, *what, *pid_file = NULL;
    int alive[2] = {-1, -1};
    struct jail_path jail_paths[MAX_JAIL_PATHS];
    int n_jail = 0;
    size_t i;

    for (; arg + 1 < argc && strncmp(argv[arg], "--", 2) == 0; arg += 2) {
        if (strcmp(argv[arg], "--go") == 0) {
            go = atoi(argv[arg + 1]);
        } else if (strcmp(argv[arg], "--caps") == 0) {
            errno = 0;
            caps = strtoull(argv[arg + 1], &end_of_caps, 16);
            if (errno || *end_of_caps || end_of_caps == argv[arg + 1]) {
                fprintf(stderr, "zoned-vmwrap: --caps: not a hex mask: %s\n", argv[arg + 1]);
                return 125;
            }
            cut_caps = 1;
        } else if (strcmp(argv[arg], "--pid-file") == 0) {
            pid_file = argv[arg + 1];
        } else if (strcmp(argv[arg], "--jail") == 0) {
            jail = argv[arg + 1];
        } else if (strcmp(argv[arg], "--ro") == 0 || strcmp(argv[arg], "--rw") == 0 ||
                   strcmp(argv[arg], "--dev") == 0) {
            if (n_jail == MAX_JAIL_PATHS) {
                fprintf(stderr, "zoned-vmwrap: more than %d jail paths\n", MAX_JAIL_PATHS);
                return 125;
            }
            jail_paths[n_jail].kind = argv[arg][2] == 'r' && argv[arg][3] == 'o' ? 'r' :
                                      argv[arg][2] == 'r' ? 'w' : 'd';
            jail_paths[n_jail++].path = argv[arg + 1];
        } else if (strcmp(argv[arg], "--status") == 0) {
            status_fd = open(argv[arg + 1], O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW |
                             O_CLOEXEC, 0600);
            if (status_fd < 0 || flock(status_fd, LOCK_EX) < 0) {
                perror("zoned-vmwrap: status file");
                return 125;
            }
        } else {
            break;
        }
    }
    if (argc - arg < 2) {
        fprintf(stderr, "usage: zoned-vmwrap [--go FD] [--status FILE] [--pid-file FILE] "
                "[--caps HEX] [--jail DIR [--ro|--rw|--dev PATH]...] CTL_PATH QEMU ARGS...\n");
        return 125;
    }
    if (go >= 0 && wait_go(go) < 0)
        return 125;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = forward;
    for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &sa, NULL);
    parent = getpid();
    /* A jailed QEMU is PID 1 of a pid namespace of its own: no other process of the host
     * has a pid there, to signal, prlimit or ptrace. Its parent is then out of sight
     * (getppid 0): whether it still lives is seen on a pipe it holds. */
    if (jail && (pipe2(alive, O_CLOEXEC) < 0 || unshare(CLONE_NEWPID) < 0)) {
        perror("zoned-vmwrap: QEMU's pid namespace");
        return 125;
    }
    child = fork();
    if (child < 0)
        return 125;
    if (child == 0) {
        struct pollfd gone = {alive[0], POLLIN, 0};

        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);  /* QEMU never outlives its wrapper */
        if (jail ? (close(alive[1]), poll(&gone, 1, 0) != 0) : getppid() != parent)
            _exit(125);  /* (it died before that took hold) */
        sa.sa_handler = SIG_DFL;
        for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
            sigaction(sigs[i], &sa, NULL);
        if (jail && enter_jail(jail, jail_paths, n_jail, &what) < 0) {
            fprintf(stderr, "zoned-vmwrap: QEMU's jail: %s: %s\n", what, strerror(errno));
            _exit(125);
        }
        if (cut_caps && (keep_only_caps(caps) < 0 || reach_no_other_process() < 0)) {
            perror("zoned-vmwrap: dropping QEMU's capabilities");
            _exit(125);
        }
        execvp(argv[arg + 1], argv + arg + 1);
        _exit(127);
    }
    if (pid_file && write_pid_file(pid_file, child) < 0) {
        perror("zoned-vmwrap: QEMU's pid file");
        kill(child, SIGKILL);
    }
    /* QEMU's pipes to zoned-vmlog must reach EOF when QEMU exits: no copy kept here */
    close_all_but(status_fd, alive[1]);
    /* Wait for QEMU's end without reaping it: while it is a zombie its pid cannot be
     * anyone else's, and from here no signal is passed on (nor taken for its end). */
    while (waitid(P_PID, (id_t)child, &end, WEXITED | WNOWAIT) < 0)
        if (errno != EINTR)
            return 125;
    child = 0;
    while (waitpid(end.si_pid, &status, 0) < 0)
        if (errno != EINTR)
            return 125;
    code = guest_status(argv[arg]);
    write_status(status_fd, status);
    if (code >= 0)
        return code & 0xff;
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status) ? WEXITSTATUS(status) : 255;
}
