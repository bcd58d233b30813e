/*
 * zoned's C extension: thin syscall wrappers that keep C semantics (return -1 and leave errno
 * set; the Python side raises OSError), plus the one step that must run in C between clone and
 * exec: loading the seccomp filter and calling execve with nothing in between, so a strict
 * filter cannot break the interpreter on its way to exec.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <net/if.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif

struct z_mount_attr {
    uint64_t attr_set;
    uint64_t attr_clr;
    uint64_t propagation;
    uint64_t userns_fd;
};

int z_unshare(int flags) { return unshare(flags); }
int z_setns(int fd, int nstype) { return setns(fd, nstype); }

int z_pivot_root(const char *new_root, const char *put_old)
{
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}

int z_mount(const char *source, const char *target, const char *fstype,
            unsigned long flags, const char *data)
{
    return mount(source, target, fstype, flags, data);
}

int z_umount2(const char *target, int flags) { return umount2(target, flags); }

int z_mount_setattr(int dirfd, const char *path, unsigned int flags,
                    unsigned long long attr_set, unsigned long long attr_clr,
                    unsigned long long propagation, int userns_fd)
{
    struct z_mount_attr attr = {attr_set, attr_clr, propagation,
                                (uint64_t)(userns_fd < 0 ? 0 : userns_fd)};
    return (int)syscall(SYS_mount_setattr, dirfd, path, flags, &attr, sizeof(attr));
}

int z_open_tree(int dirfd, const char *path, unsigned int flags)
{
    return (int)syscall(SYS_open_tree, dirfd, path, flags);
}

int z_move_mount(int from_dirfd, const char *from_path, int to_dirfd, const char *to_path,
                 unsigned int flags)
{
    return (int)syscall(SYS_move_mount, from_dirfd, from_path, to_dirfd, to_path, flags);
}

int z_sethostname(const char *name, size_t len) { return sethostname(name, len); }
int z_setdomainname(const char *name, size_t len) { return setdomainname(name, len); }

int z_pidfd_open(int pid, unsigned int flags)
{
    return (int)syscall(SYS_pidfd_open, pid, flags);
}

int z_pidfd_send_signal(int pidfd, int sig, unsigned int flags)
{
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, flags);
}

int z_close_range(unsigned int first, unsigned int last, unsigned int flags)
{
    return (int)syscall(SYS_close_range, first, last, flags);
}

int z_make_netns(void)
{
    /* zoned.linux.netahead: a fresh network namespace made by this thread, its lo brought
     * up (~0.35 ms here: the init's dearest step after the unshare), and left at once
     * (unshare is per thread: the process's other threads never see it); an fd of it, or
     * -errno. Should the way back be refused (root's never is), the thread stays in the
     * fresh one, where it does nothing but close fds, and no more are asked for. */
    struct ifreq ifr;
    int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC), fd, err, s;
    if (self < 0)
        return -errno;
    if (unshare(CLONE_NEWNET) < 0) {
        err = errno;
        close(self);
        return -err;
    }
    fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    err = errno;
    memset(&ifr, 0, sizeof(ifr));
    strcpy(ifr.ifr_name, "lo");
    s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0 ||
                    (ifr.ifr_flags |= IFF_UP, ioctl(s, SIOCSIFFLAGS, &ifr) < 0))) {
        err = errno;
        close(fd);
        fd = -1;
    }
    if (s >= 0)
        close(s);
    if (setns(self, CLONE_NEWNET) < 0) {
        err = errno;
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    close(self);
    return fd < 0 ? -err : fd;
}

void z_close_fds(const int *fds, int n)
{
    /* zoned.linux.lastref's closer: one call, the GIL let go once for all of them. */
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

int z_seccomp_set_filter(unsigned int flags, const unsigned char *prog, size_t len)
{
    struct sock_fprog fprog;
    if (len == 0 || len % sizeof(struct sock_filter) != 0) {
        errno = EINVAL;
        return -1;
    }
    fprog.len = (unsigned short)(len / sizeof(struct sock_filter));
    fprog.filter = (struct sock_filter *)prog;
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &fprog);
}

int z_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4,
            unsigned long a5)
{
    return prctl(option, a2, a3, a4, a5);
}

int z_personality(unsigned long persona) { return personality(persona); }

int z_bpf(int cmd, void *attr, unsigned int size)
{
    return (int)syscall(SYS_bpf, cmd, attr, size);
}

/*
 * clone3 as fork(2) with namespace/cgroup flags. Only safe from a single-threaded caller that
 * is about to exec (the child must not return into an interpreter holding another thread's
 * locks); zoned's Python path uses os.fork and calls this only from such children.
 */
int z_clone3(unsigned long long flags, int cgroup_fd, int *pidfd_out)
{
    struct clone_args args;
    memset(&args, 0, sizeof(args));
    args.flags = flags;
    /* With CLONE_PARENT the child inherits our exit signal; clone3 rejects one here. */
    args.exit_signal = (flags & CLONE_PARENT) ? 0 : SIGCHLD;
    if (flags & CLONE_PIDFD)
        args.pidfd = (uint64_t)(uintptr_t)pidfd_out;
    if (flags & CLONE_INTO_CGROUP)
        args.cgroup = (uint64_t)cgroup_fd;
    return (int)syscall(SYS_clone3, &args, sizeof(args));
}

/*
 * The release of an exec'd process (zoned exec). The caller, zoned's helper, is not in the
 * container's pid namespace (only its children go there) and has done all set-up. This clones
 * the real process: CLONE_PARENT makes it zoned's child, as a plain fork would. The child
 * runs only the steps below, all in C, then execve; until execve it is the helper's
 * (non-dumpable) copy and the only moment a process of zoned's is visible inside the
 * container.
 *   go_fd           first it waits for a byte here (EOF: exit): zoned moves it into the
 *                   container's cgroup meanwhile (a move is never refused by pids.max, a
 *                   fork inside a full cgroup is; the helper stays outside)
 *   pdeathsig       if non-zero: set it, then exit if zoned (parent_pidfd) is already gone
 *   setsid          a session of its own; with tty_fd >= 0 that pty becomes its terminal
 *   bpf             seccomp filter to load last (the no_new_privs case; else none here)
 * On failure the child writes {errno, step} to err_fd (a CLOEXEC pipe: EOF means execve
 * worked) and exits 127. Returns the child's pid (in the caller's pid namespace), or -1.
 * The legacy clone syscall, not clone3: seccomp profiles that deny clone3 (docker's returns
 * ENOSYS) allow clone without namespace flags, and a non-NNP filter is already loaded here.
 */
int z_spawn_exec(const char *path, char *const argv[], char *const envp[],
                 const unsigned char *bpf, size_t bpf_len, unsigned int seccomp_flags,
                 int pdeathsig, int parent_pidfd, int tty_fd, int go_fd, int err_fd)
{
    int joined;
    return z_spawn_exec_joining(path, argv, envp, bpf, bpf_len, seccomp_flags, pdeathsig,
                                parent_pidfd, tty_fd, go_fd, err_fd, -1, NULL, 0, NULL,
                                -1, &joined);
}

static int z_set_creds(char *const a[], int *step);

/*
 * z_spawn_exec, where the new process joins the container's cgroups itself before it waits
 * for "go" (zoned-spawn's exec): it is cloned into the cgroup2 cgroup at cgroup_fd (clone3,
 * CLONE_INTO_CGROUP; -1: none, a pure v1 host), then writes "0" to each v1 `tasks` file at
 * tasks[]. That moves this one thread, no thread group: the kernel then takes no
 * cgroup_threadgroup_rwsem for writing, whose first writer after a quiet spell waits for an
 * RCU grace period (8-30 ms here), as zoned's move of it by pid did (and runc's exec does).
 * *joined: 1 if it joins them; 0 if clone3 could not (an old kernel, a seccomp profile
 * that denies clone3, a cgroup at its pids.max, where a fork is refused and a move is
 * not): it is then a plain z_spawn_exec child, which zoned moves. A `tasks` write that
 * fails is reported as step Z_STEP_CGROUP.
 * creds (NULL: none; z_set_creds's fields): the user and capabilities it takes after the
 * seccomp filter is loaded, not its caller before: a filter without no_new_privs needs
 * CAP_SYS_ADMIN to load, so a caller that dropped its capabilities first had to load it
 * before the clone, and a profile that denies clone3 (Docker's, containerd's) kept the
 * process out of CLONE_INTO_CGROUP. Reported as step Z_STEP_CREDS + the Z_CREDS_ step.
 * userns_fd (-1: none): the zone's user namespace, which it joins once in its cgroups: its
 * caller stays in the host's, so that the clone into the cgroup2 cgroup is allowed (from
 * inside the zone's user namespace the kernel refuses it: EACCES); with creds. Reported as
 * step Z_STEP_USERNS.
 */
int z_spawn_exec_joining(const char *path, char *const argv[], char *const envp[],
                         const unsigned char *bpf, size_t bpf_len,
                         unsigned int seccomp_flags, int pdeathsig, int parent_pidfd,
                         int tty_fd, int go_fd, int err_fd, int cgroup_fd,
                         const int *tasks, int ntasks, char *const *creds, int userns_fd,
                         int *joined)
{
    int report[2] = {0, 0}, creds_step;
    char go;
    long pid = -1;
    struct pollfd parent = {parent_pidfd, POLLIN, 0};
    *joined = ntasks > 0 || cgroup_fd >= 0;
    if (cgroup_fd >= 0) {
        pid = z_clone3(CLONE_PARENT | CLONE_INTO_CGROUP, cgroup_fd, NULL);
        if (pid < 0)
            *joined = 0;
    }
    if (pid < 0)
        pid = syscall(SYS_clone, CLONE_PARENT, 0, NULL, NULL, 0);
    if (pid != 0)
        return (int)pid;
    /*
     * Until "go" the process is zoned's: if zoned dies while it waits, it dies too. EOF on
     * go_fd cannot tell, as this copy still holds the pipe's write end (a killed `zoned exec`
     * left such a process blocked in read, holding its caller's stdout, for ever).
     */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 ||
        (parent_pidfd >= 0 && poll(&parent, 1, 0) != 0))
        _exit(1);  /* (zoned died before the signal was armed) */
    report[1] = Z_STEP_CGROUP;
    for (int i = 0; *joined && i < ntasks; i++)
        if (write(tasks[i], "0", 1) != 1)
            goto fail;
    for (int i = 0; i < ntasks; i++)
        close(tasks[i]);
    report[1] = Z_STEP_USERNS;
    if (userns_fd >= 0 && (setns(userns_fd, CLONE_NEWUSER) < 0 || close(userns_fd) < 0))
        goto fail;
    if (go_fd >= 0 && read(go_fd, &go, 1) != 1)
        _exit(1);
    report[1] = Z_STEP_PDEATHSIG;
    if (prctl(PR_SET_PDEATHSIG, pdeathsig, 0, 0, 0) < 0)  /* 0 (exec -d): outlive zoned */
        goto fail;
    if (pdeathsig && parent_pidfd >= 0 && poll(&parent, 1, 0) != 0)
        _exit(1);
    report[1] = Z_STEP_SETSID;
    if (setsid() < 0)
        goto fail;
    report[1] = Z_STEP_TTY;
    if (tty_fd >= 0 && ioctl(tty_fd, TIOCSCTTY, 0) < 0)
        goto fail;
    report[1] = Z_STEP_SECCOMP;
    if (bpf_len > 0 && z_seccomp_set_filter(seccomp_flags, bpf, bpf_len) < 0)
        goto fail;
    if (creds) {
        if (z_set_creds(creds, &creds_step) < 0) {
            report[1] = Z_STEP_CREDS + creds_step;
            goto fail;
        }
        report[1] = Z_STEP_CREDS + Z_CREDS_PRCTL;
        /* the uid change reset both; a parent gone meanwhile: as above (a poll the filter
         * denies is no death) */
        if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 ||
            prctl(PR_SET_PDEATHSIG, pdeathsig, 0, 0, 0) < 0)
            goto fail;
        if (pdeathsig && parent_pidfd >= 0 && poll(&parent, 1, 0) > 0)
            _exit(1);
    }
    report[1] = Z_STEP_EXEC;
    execve(path, argv, envp);
fail:
    report[0] = errno;
    if (write(err_fd, report, sizeof(report)) < 0) {
        /* nothing left to tell it with */
    }
    _exit(127);
}

/* execveat(fd, "", ..., AT_EMPTY_PATH): run an executable held by fd (a sealed memfd). */
int z_execveat(int fd, char *const argv[], char *const envp[])
{
    return (int)syscall(SYS_execveat, fd, "", argv, envp, AT_EMPTY_PATH);
}

/*
 * The last step of container set-up: seccomp (if any) then execve, with no other syscall in
 * between. Returns only on failure, with errno set.
 */
int z_exec(const char *path, char *const argv[], char *const envp[],
           const unsigned char *bpf, size_t bpf_len, unsigned int seccomp_flags)
{
    if (bpf_len > 0 && z_seccomp_set_filter(seccomp_flags, bpf, bpf_len) < 0)
        return -1;
    execve(path, argv, envp);
    return -1;
}

/* -- paths inside a container's rootfs (zoned/child/inroot.py) --------------------------------- */
#include <sys/vfs.h>

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

struct z_open_how {
    uint64_t flags;
    uint64_t mode;
    uint64_t resolve;
};

/* openat2(2): open_how as three numbers, so Python need not lay out the struct. */
int z_openat2(int dirfd, const char *path, unsigned long long flags,
              unsigned long long mode, unsigned long long resolve)
{
    struct z_open_how how = {flags, mode, resolve};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

/* The f_type (filesystem magic) of an open file, or -1 with errno. */
long long z_fstatfs_type(int fd)
{
    struct statfs st;
    if (fstatfs(fd, &st) < 0)
        return -1;
    return (long long)st.f_type;
}

/*
 * capget/capset, version 3 (two 32-bit words per set): a process's three capability sets as
 * 64-bit masks, read or written in one call. A container's init sets its user's
 * capabilities with these (python-prctl did it through libcap: an import of ~2 ms on every
 * start, after the fork).
 */
int z_capget(unsigned long long *effective, unsigned long long *permitted,
             unsigned long long *inheritable)
{
    struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capget, &head, data) < 0)
        return -1;
    *effective = data[0].effective | (unsigned long long)data[1].effective << 32;
    *permitted = data[0].permitted | (unsigned long long)data[1].permitted << 32;
    *inheritable = data[0].inheritable | (unsigned long long)data[1].inheritable << 32;
    return 0;
}

int z_capset(unsigned long long effective, unsigned long long permitted,
             unsigned long long inheritable)
{
    struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    data[0].effective = (uint32_t)effective;
    data[1].effective = (uint32_t)(effective >> 32);
    data[0].permitted = (uint32_t)permitted;
    data[1].permitted = (uint32_t)(permitted >> 32);
    data[0].inheritable = (uint32_t)inheritable;
    data[1].inheritable = (uint32_t)(inheritable >> 32);
    return (int)syscall(SYS_capset, &head, data);
}

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

/* setgroups is denied in our user namespace, one its own user mapped
 * (security.setgroups_denied: /proc/self, or PID 1's where an exec helper's is missing). */
static int setgroups_denied(void)
{
    static const char *const paths[] = {"/proc/self/setgroups", "/proc/1/setgroups"};
    for (int i = 0; i < 2; i++) {
        char buf[8] = {0};
        int fd = open(paths[i], O_RDONLY | O_CLOEXEC), n;
        if (fd < 0)
            continue;
        n = (int)read(fd, buf, sizeof(buf) - 1);
        close(fd);
        return n >= 4 && strncmp(buf, "deny", 4) == 0;
    }
    return 0;
}

/*
 * A process's user and capabilities, in runc's order (security.apply_user_and_caps): keep
 * caps across setuid, drop the bounding set, groups, gid, uid, umask, one capset for the
 * three sets, the ambient ones, no_new_privs. a[] as zoned.child.security.creds_fields
 * gives them: BOUNDING_DROP GROUPS GROUPS_SHOWN UID GID UMASK EFFECTIVE PERMITTED
 * INHERITABLE AMBIENT NO_NEW_PRIVS (lists: comma separated numbers; UMASK -1: none).
 * -1 with errno and *step (Z_CREDS_*: which call) on failure. The caller then sets
 * non-dumpable and its parent-death signal again: the uid change reset both.
 */
static int z_set_creds(char *const a[], int *step)
{
    static gid_t groups[NGROUPS_MAX];
    size_t ngroups = 0;
    char *end;
    const char *p;
    long umask_value = strtol(a[5], NULL, 0);

    *step = Z_CREDS_KEEPCAPS;
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        return -1;
    *step = Z_CREDS_BOUNDING;
    for (p = a[0]; *p; p = *end ? end + 1 : end)
        if (prctl(PR_CAPBSET_DROP, strtoul(p, &end, 10), 0, 0, 0) < 0)
            return -1;
    *step = Z_CREDS_GROUPS;
    for (p = a[1]; *p && ngroups < NGROUPS_MAX; p = *end ? end + 1 : end)
        groups[ngroups++] = (gid_t)strtoul(p, &end, 10);
    if (setgroups(ngroups, groups) < 0 && (errno != EPERM || ngroups || !setgroups_denied()))
        return -1;  /* (rootless, one id mapped: no group can exist, as security.py says) */
    *step = Z_CREDS_GID;
    if (setresgid((gid_t)strtoul(a[4], NULL, 10), (gid_t)strtoul(a[4], NULL, 10),
                  (gid_t)strtoul(a[4], NULL, 10)) < 0)
        return -1;
    *step = Z_CREDS_UID;
    if (setresuid((uid_t)strtoul(a[3], NULL, 10), (uid_t)strtoul(a[3], NULL, 10),
                  (uid_t)strtoul(a[3], NULL, 10)) < 0)
        return -1;
    if (umask_value >= 0)
        umask((mode_t)umask_value);
    /* one capset for all three sets: effective must stay within permitted at every step */
    *step = Z_CREDS_CAPSET;
    if (z_capset(strtoull(a[6], NULL, 10), strtoull(a[7], NULL, 10),
                 strtoull(a[8], NULL, 10)) < 0)
        return -1;
    *step = Z_CREDS_PRCTL;
    if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0 ||
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        return -1;
    *step = Z_CREDS_AMBIENT;
    for (p = a[9]; *p; p = *end ? end + 1 : end)  /* not permitted and inheritable: runc */
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, strtoul(p, &end, 10), 0, 0) < 0 &&
            errno != EPERM)  /* ignores that too */
            return -1;
    *step = Z_CREDS_NNP;
    if (atoi(a[10]) && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -1;
    return 0;
}
