/*
 * A container init's set-up, in C: `zoned-spawn setup SOCK PLAN_FD`. zoned forks and the
 * child execs this at once, so that nothing between fork and the container's process is
 * python (its copy-on-write faults and bytecode cost ~2 ms a start: bench/README, finding
 * 21). zoned/child/initplan.py compiles what zoned.child.process._child would do for the
 * config into a plan (csrc/initplan.h): every decision that needs no look at the rootfs is
 * made there, in Python, once; this runs the plan's ops in order and makes the decisions
 * that do (paths inside the root: csrc/inroot.c). The end is init_wait and init_exec
 * (spawn.c): "ready", the start signal, seccomp, execve.
 *
 * A failing op reports as process.run_child does ({"op":"error","message":...,"errno":E}
 * on SOCK) with the same words, and the init exits; errno E is non-zero only for the
 * command's own exec (127/126).
 */
#include <grp.h>
#include <limits.h>
#include <net/if.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <time.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <linux/mount.h>

#include "initplan.h"
#include "inroot.c"

#define MASK_ATTRS (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC)
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

static int s_sock = -1;             /* the sync socket */
static int s_root = -1;             /* O_PATH fd of the rootfs, once mounted */
static int s_empty_tree = -1;       /* the masks' empty directory, detached */
static char s_masked_dir[PATH_MAX]; /* a directory masked already: the next is its bind */
static const char *s_exec_path;     /* the container's command, looked up */
static char s_msg[8192];            /* the error said */
static int s_cmd_errno;             /* the command's own exec error, else 0 */
static int s_in_cgroup;             /* "cgroup" has come (and its files were joined) */

static const char *nul(const char *s) { return *s ? s : NULL; }
static unsigned long num(const char *s) { return strtoul(s, NULL, 0); }

static int failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int failf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s_msg, sizeof(s_msg), fmt, ap);
    va_end(ap);
    z_errcall = z_errname = z_errtext = NULL;
    return -1;
}

/* An OSError as process.describe shows it: "[call: ]why[: name]" (zoned.linux.syscalls
 * puts the call's name before the kernel's words; os.* functions do not). */
static const char *what(int err)
{
    static char buf[PATH_MAX + 256];
    const char *why = z_errtext ? z_errtext : strerror(err);
    snprintf(buf, sizeof(buf), "%s%s%s%s%s", z_errcall ? z_errcall : "", z_errcall ? ": " : "",
             why, z_errname ? ": " : "", z_errname ? z_errname : "");
    return buf;
}

/* "CONTEXT: why: name" (rootfs.py's wrapping of an OSError), or the OSError alone. */
static int fail_ctx(const char *ctx)
{
    int err = errno;
    return *ctx ? failf("%s: %s", ctx, what(err)) : failf("%s", what(err));
}

/* -- mounts ----------------------------------------------------------------------------- */

/* Target.mount: mount(2) onto the very file the target holds; errors name its path. */
static int t_mount(struct z_target *t, const char *src, const char *fstype,
                   unsigned long flags, const char *data)
{
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", t->fd);
    if (mount(src, proc, fstype, flags, data) < 0) {
        z_err("mount", t->shown);
        return -1;
    }
    return 0;
}

/* rootfs.check_proc_mount, on the destination resolved: nothing may hide the procfs. */
static int check_proc(const char *dest, int proc_ok, const char *msg)
{
    static const char *const mountable[] = {
        "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
        "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev",
        "/proc/sys/kernel/ns_last_pid", NULL};
    if (strcmp(dest, "/proc") == 0)
        return proc_ok ? 0 : failf("%s: /proc cannot be mounted over because it is not of "
                                   "type proc", msg);
    if (strncmp(dest, "/proc/", 6) != 0)
        return 0;
    for (int i = 0; mountable[i]; i++)
        if (strcmp(dest, mountable[i]) == 0)
            return 0;
    return failf("%s: %s cannot be mounted because it is inside /proc", msg, dest);
}

/* A mount's destination opened (made) inside the root, after the checks rootfs.mount does
 * first: not the root itself, not hiding the procfs. */
static int open_destination(const char *dest, int kind, int proc_ok, const char *proc_msg,
                            const char *ctx, const char *root_msg, struct z_target *t)
{
    struct z_names names;
    char *shown;
    int rc;
    t->fd = t->parent = -1;
    t->shown = NULL;
    if (z_resolve(s_root, dest, &names) < 0)
        return fail_ctx(ctx);
    if (names.n == 0) {
        names_free(&names);
        return failf("%s", root_msg);
    }
    if (!(shown = names_shown(&names)) || check_proc(shown, proc_ok, proc_msg) < 0) {
        rc = shown ? -1 : failf("%s", strerror(errno));
        free(shown);
        names_free(&names);
        return rc;
    }
    free(shown);
    rc = z_target_names(s_root, &names, kind, t);
    names_free(&names);
    if (rc < 0) {
        int err = errno;
        z_target_close(t);
        errno = err;
        return fail_ctx(ctx);
    }
    return 0;
}

/* Rootfs._bind_device: PATH CONTEXT. In a user namespace no device node can be made: the
 * host's at PATH is bound onto a file at PATH inside the root (z_file_target: a symlink
 * there is replaced, never followed). */
static int op_bind_device(char **a)
{
    struct z_target t;
    int rc = z_file_target(s_root, a[0], &t) < 0 || t_mount(&t, a[0], NULL, MS_BIND, NULL) < 0
             ? fail_ctx(a[1]) : 0;
    z_target_close(&t);
    return rc;
}

/* An idmapped bind: the detached tree zoned made (runtime.handoff.idmapped_tree, as the
 * host's root: a user namespace's may not idmap a host file system), attached onto the
 * target. */
static int attach_tree(int tree, struct z_target *t)
{
    if (z_move_mount(tree, "", t->fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        return z_err("move_mount", NULL), -1;
    return 0;
}

/* Rootfs.mount: DEST KIND BIND FLAGS PROP DATA SOURCE LIKE_FILE PROC_OK PROC_MSG CONTEXT
 * ROOT_MSG IDMAP_FD RIDMAP (KIND "": none; SOURCE: the bind's, else what mount(2) gets;
 * IDMAP_FD: the idmapped tree to attach, -1: a plain bind; RIDMAP: unused, the tree has
 * its mapping already). */
static int op_mount_entry(char **a)
{
    const char *kind = a[1], *data = a[5], *src = a[6], *ctx = a[10];
    unsigned long flags = num(a[3]), prop = num(a[4]);
    int idmap_fd = atoi(a[12]), err;
    struct z_target t;

    if (open_destination(a[0], atoi(a[7]) ? 'f' : 'd', atoi(a[8]), a[9], ctx, a[11], &t) < 0)
        return -1;
    if (atoi(a[2])) {
        unsigned long rest = flags & ~(unsigned long)(MS_BIND | MS_REC | MS_REMOUNT);
        if ((idmap_fd >= 0 ? attach_tree(idmap_fd, &t)
                           : t_mount(&t, src, NULL, MS_BIND | (flags & MS_REC), NULL)) < 0 ||
            z_target_reopen(&t) < 0 ||
            (rest && t_mount(&t, NULL, NULL, MS_BIND | MS_REMOUNT | rest, NULL) < 0))
            goto fail;
    } else if (t_mount(&t, nul(src), nul(kind), flags, nul(data)) == 0) {
        if (z_target_reopen(&t) < 0)
            goto fail;
    } else if ((errno == EPERM || errno == EACCES) && strcmp(kind, "sysfs") == 0) {
        /* sysfs of a shared (host) network namespace: bind the host's instead */
        if (t_mount(&t, "/sys", NULL, MS_BIND | MS_REC, NULL) < 0 || z_target_reopen(&t) < 0 ||
            t_mount(&t, NULL, NULL, MS_BIND | MS_REMOUNT | flags, NULL) < 0)
            goto fail;
    } else {
        goto fail;
    }
    if (prop && t_mount(&t, NULL, NULL, prop, NULL) < 0)
        goto fail;
    z_target_close(&t);
    return 0;
fail:
    err = errno;
    z_target_close(&t);
    errno = err;
    return fail_ctx(ctx);
}

/* The mount_setattr attributes a bind remount with MS_RDONLY | FLAGS gives a mount (its
 * per-mount flags then are those alone: the others cleared, relatime by default); 0 if FLAGS
 * has one it has none for (the caller then remounts). */
static int remount_attrs(unsigned long flags, unsigned long long *set, unsigned long long *clr)
{
    const unsigned long known = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME |
                                MS_NODIRATIME | MS_RELATIME | MS_STRICTATIME | MS_RDONLY;
    if (flags & ~known)
        return 0;
    *set = MOUNT_ATTR_RDONLY | (flags & MS_NOSUID ? MOUNT_ATTR_NOSUID : 0) |
           (flags & MS_NODEV ? MOUNT_ATTR_NODEV : 0) |
           (flags & MS_NOEXEC ? MOUNT_ATTR_NOEXEC : 0) |
           (flags & MS_NODIRATIME ? MOUNT_ATTR_NODIRATIME : 0) |
           (flags & MS_NOATIME ? MOUNT_ATTR_NOATIME :
            flags & MS_STRICTATIME ? MOUNT_ATTR_STRICTATIME : MOUNT_ATTR_RELATIME);
    *clr = ((MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NODIRATIME) &
            ~*set) | MOUNT_ATTR__ATIME;  /* (the atime mode is one field: cleared, then set) */
    return 1;
}

/* Rootfs.mount_cgroups: DEST FLAGS PROC_MSG CONTEXT ROOT_MSG MODE, then for MODE 2 (one
 * cgroup2 hierarchy) SOURCE (the zone's own cgroup to bind; "": a fresh mount), for MODE 1
 * SKELETON N and N x (NAME SOURCE FSTYPE OPTIONS ALLOW_ENOENT): a tmpfs (or the zone's
 * skeleton dir) holding each v1 hierarchy, the zone's own cgroup bound where it has one. */
static int op_mount_cgroups(char **a, int nargs)
{
    if (a[5][0] == '1' && (nargs < 8 || 8 + 5 * atoi(a[7]) > nargs || atoi(a[7]) < 0))
        return failf("zoned-spawn: a plan of another build (cgroups)");
    unsigned long flags = num(a[1]) & ~(unsigned long)MS_RDONLY;
    const char *ctx = a[3];
    struct z_target t, sub = {-1, -1, "", NULL};
    int err, skeleton = 0, later = 0;
    unsigned long long set = 0, clr = 0;
    /* The binds made read-only at the end in one mount_setattr of the whole tree, where
     * the kernel has it: two syscalls fewer a hierarchy (~0.2 ms of a zone's start). */
    int at_once = remount_attrs(flags, &set, &clr);

    if (open_destination(a[0], 'd', 0, a[2], ctx, a[4], &t) < 0)
        return -1;
    if (a[5][0] == '2') {
        if (*a[6]) {
            if (t_mount(&t, a[6], NULL, MS_BIND | MS_REC, NULL) < 0 || z_target_reopen(&t) < 0 ||
                t_mount(&t, NULL, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | flags, NULL) < 0)
                goto fail;
        } else if (t_mount(&t, "cgroup", "cgroup2", flags | MS_RDONLY, NULL) < 0) {
            goto fail;
        }
        z_target_close(&t);
        return 0;
    }
    if (*a[6]) {
        if (t_mount(&t, a[6], NULL, MS_BIND, NULL) == 0)
            skeleton = 1;
        else if (errno != EPERM && errno != EACCES)  /* (its root cannot reach it) */
            goto fail;
    }
    if (!skeleton && t_mount(&t, "tmpfs", "tmpfs", flags, "mode=755") < 0)
        goto fail;
    if (z_target_reopen(&t) < 0)
        goto fail;
    for (int i = 0, n = atoi(a[7]); i < n; i++) {
        char **h = a + 8 + 5 * i;  /* NAME SOURCE FSTYPE OPTIONS ALLOW_ENOENT */
        int bound = 0;
        if (z_target(t.fd, h[0], 'd', &sub) < 0)
            goto fail;
        if (*h[1]) {
            if (t_mount(&sub, h[1], NULL, MS_BIND | MS_REC, NULL) == 0) {
                if (at_once)
                    later = 1;
                else if (z_target_reopen(&sub) < 0 ||
                         t_mount(&sub, NULL, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | flags,
                                 NULL) < 0)
                    goto fail;
                bound = 1;
            } else if (!(errno == ENOENT && atoi(h[4]))) {
                goto fail;
            }
        }
        if (!bound && t_mount(&sub, "cgroup", h[2], flags | MS_RDONLY, nul(h[3])) < 0)
            goto fail;
        z_target_close(&sub);
    }
    /* a bind's flags are its mount's alone; without MS_BIND this would remount the file
     * system under the skeleton: the host's */
    if (t_mount(&t, NULL, NULL, MS_REMOUNT | MS_RDONLY | flags | (skeleton ? MS_BIND : 0),
                NULL) < 0)
        goto fail;
    if (later && z_mount_setattr(t.fd, "", AT_EMPTY_PATH | AT_RECURSIVE, set, clr, 0, -1) < 0) {
        if (errno != ENOSYS)
            goto fail;
        for (int i = 0, n = atoi(a[7]); i < n; i++) {  /* (a kernel before 5.12) */
            char **h = a + 8 + 5 * i;
            if (z_target(t.fd, h[0], 'd', &sub) < 0 ||
                t_mount(&sub, NULL, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | flags, NULL) < 0)
                goto fail;
            z_target_close(&sub);
        }
    }
    z_target_close(&t);
    return 0;
fail:
    err = errno;
    z_target_close(&sub);
    z_target_close(&t);
    errno = err;
    return fail_ctx(ctx);
}

/* SOURCE TARGET FSTYPE FLAGS DATA CONTEXT HINT: a mount outside the root (the root's own). */
static int op_mount(char **a)
{
    if (mount(nul(a[0]), a[1], nul(a[2]), num(a[3]), nul(a[4])) == 0)
        return 0;
    if (*a[5])
        return failf("%s: %s%s", a[5], strerror(errno), a[6]);
    z_err("mount", a[1]);
    return fail_ctx("");
}

static int op_dev_symlinks(void)
{
    static const char *const links[][2] = {
        {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
        {"/proc/self/fd/2", "stderr"}, {"pts/ptmx", "ptmx"}};
    struct z_names names;
    int dev, rc = 0;
    if (z_resolve(s_root, "/dev", &names) < 0)
        return fail_ctx("");
    dev = z_open_dir(s_root, names.v, names.n, 1);
    names_free(&names);
    if (dev < 0)
        return fail_ctx("");
    for (size_t i = 0; rc == 0 && i < sizeof(links) / sizeof(links[0]); i++)
        if (symlinkat(links[i][0], dev, links[i][1]) < 0 && errno != EEXIST) {
            z_err(NULL, links[i][0]);
            rc = fail_ctx("");
        }
    close(dev);
    return rc;
}

/* process.cwd_error: the working directory cannot be made or entered: the config's fault. */
static int cwd_error(const char *cwd, int err)
{
    const char *why = err == ENOENT ? "no such directory in the zone" :
                      err == ENOTDIR ? "not a directory in the zone" :
                      z_errtext ? z_errtext : strerror(err);
    return failf("invalid process.cwd \"%s\": %s", cwd, why);
}

static int op_pivot(char **a)
{
    unsigned long prop = num(a[2]);
    if (chdir(a[0]) < 0)
        return z_err(NULL, a[0]), fail_ctx("");
    if (atoi(a[1])) {  /* runc --no-pivot */
        if (mount(a[0], "/", NULL, MS_MOVE, NULL) < 0)
            return z_err("mount", "/"), fail_ctx("");
        if (chroot(".") < 0)
            return z_err(NULL, "."), fail_ctx("");
    } else {
        if (syscall(SYS_pivot_root, ".", ".") < 0)
            return z_err("pivot_root", "."), fail_ctx("");
        if (mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0)
            return z_err("mount", "."), fail_ctx("");
        if (umount2(".", MNT_DETACH) < 0)
            return z_err("umount2", "."), fail_ctx("");
    }
    if (chdir("/") < 0)
        return z_err(NULL, "/"), fail_ctx("");
    if (prop && mount(NULL, "/", NULL, prop, NULL) < 0)
        return z_err("mount", "/"), fail_ctx("");
    close(s_root);  /* the old root's, gone */
    s_root = -1;
    return 0;
}

/* rootfs.mask_path: a file under /dev/null, a directory under an empty read-only one. */
static int op_mask(char **a)
{
    const char *path = a[0];
    struct stat st;
    int fd, err;
    if (stat(path, &st) < 0)
        return errno == ENOENT || errno == ENOTDIR ? 0 : (z_err(NULL, path), fail_ctx(a[1]));
    if (!S_ISDIR(st.st_mode)) {
        if (mount("/dev/null", path, NULL, MS_BIND, NULL) < 0)
            return z_err("mount", path), fail_ctx(a[1]);
        return 0;
    }
    if (s_masked_dir[0]) {
        if (mount(s_masked_dir, path, NULL, MS_BIND, NULL) < 0)
            return z_err("mount", path), fail_ctx(a[1]);
        if (z_mount_setattr(AT_FDCWD, path, 0, MASK_ATTRS, 0, 0, -1) < 0)
            return z_err("mount_setattr", path), fail_ctx(a[1]);
    } else if (s_empty_tree >= 0) {
        if ((fd = open(path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
            return z_err(NULL, path), fail_ctx(a[1]);
        if (z_move_mount(s_empty_tree, "", fd, "",
                         MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0) {
            err = errno;
            close(fd);
            errno = err;
            return z_err("move_mount", NULL), fail_ctx(a[1]);
        }
        close(fd);
    } else if (mount("tmpfs", path, "tmpfs", MS_RDONLY, NULL) < 0) {
        return z_err("mount", path), fail_ctx(a[1]);
    }
    snprintf(s_masked_dir, sizeof(s_masked_dir), "%s", path);
    return 0;
}

static int op_readonly(char **a)
{
    if (mount(a[0], a[0], NULL, MS_BIND | MS_REC, NULL) < 0)
        return errno == ENOENT ? 0 : (z_err("mount", a[0]), fail_ctx(a[1]));
    if (z_mount_setattr(AT_FDCWD, a[0], AT_RECURSIVE, MOUNT_ATTR_RDONLY, 0, 0, -1) < 0)
        return z_err("mount_setattr", a[0]), fail_ctx(a[1]);
    return 0;
}

/* PATH DATA CONTEXT: write a file of the zone's /proc (sysctls, time offsets,
 * oom_score_adj); "CONTEXT: why" on failure. Never a file the rootfs put there (no /proc
 * mounted): not followed, not made, not waited on (a FIFO), refused if not procfs. */
static int op_write(char **a, size_t len)
{
    int fd = open(a[0], O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC), err;
    struct statfs fs;
    ssize_t n = -1;
    if (fd >= 0 && fstatfs(fd, &fs) == 0 && fs.f_type != PROC_SUPER_MAGIC) {
        close(fd);
        return failf("%s: not a file of procfs (is /proc mounted?)", a[2]);
    }
    if (fd >= 0)
        n = write(fd, a[1], len);
    err = errno;
    if (fd >= 0)
        close(fd);
    if (n == (ssize_t)len)
        return 0;
    return failf("%s: %s", a[2], strerror(n < 0 ? err : EIO));
}

#include "setupsync.c"
#include "setupproc.c"
#include "setuphooks.c"
