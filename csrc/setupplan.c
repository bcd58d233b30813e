/*
 * `zoned-spawn setup SOCK PLAN_FD`: read a container init's plan (csrc/initplan.h) and run
 * its ops (csrc/setup.c) in order, then wait for the start and exec (init_wait, init_exec).
 */
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "setup.c"

struct plan_op {
    int op, nargs;
    char **a;       /* the arguments, NUL-terminated */
};

static const unsigned char *s_program;  /* the seccomp program (Z_PLAN_PROGRAM) */
static size_t s_program_len;
static int s_late;                      /* Z_PLAN_LATE: "start" brings the process */
static struct plan_op *s_start_hooks;   /* startContainer's Z_PLAN_HOOKS: run once started */

/* The whole plan from PLAN_FD (a memfd zoned wrote), split in place into ops. */
static struct plan_op *read_plan(int fd, int *count)
{
    struct stat st;
    struct plan_op *ops = NULL;
    char *buf, *p, *end;
    size_t got = 0;
    int n = 0;

    if (fstat(fd, &st) < 0 || st.st_size < 4 || !(buf = malloc((size_t)st.st_size + 1)))
        return NULL;
    while (got < (size_t)st.st_size) {
        ssize_t r = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);
        if (r <= 0)
            return NULL;
        got += (size_t)r;
    }
    if (memcmp(buf, "ZPL", 3) != 0 || buf[3] != Z_PLAN_VERSION)
        return NULL;
    for (p = buf + 4, end = buf + got; p < end; n++) {
        uint32_t hdr[3], len;  /* op, nargs, length */
        struct plan_op *grown = realloc(ops, sizeof(*ops) * (size_t)(n + 1));
        char *arg;
        if (!grown || end - p < 12)
            return NULL;
        ops = grown;
        memcpy(hdr, p, 12);
        p += 12;
        len = hdr[2];
        if ((size_t)(end - p) < len || hdr[1] > len)
            return NULL;
        ops[n].op = (int)hdr[0];
        ops[n].nargs = (int)hdr[1];
        if (!(ops[n].a = calloc((size_t)hdr[1] + 1, sizeof(char *))))
            return NULL;
        if (hdr[0] == Z_PLAN_PROGRAM) {
            s_program = (const unsigned char *)p;
            s_program_len = len;
            p += len;
            continue;
        }
        if (hdr[1] > 0 && (len == 0 || p[len - 1] != 0))
            return NULL;
        arg = p;
        for (uint32_t i = 0; i < hdr[1]; i++) {
            if (arg >= p + len)
                return NULL;
            ops[n].a[i] = arg;
            arg += strlen(arg) + 1;
        }
        if (arg != p + len)
            return NULL;
        p += len;
    }
    *count = n;
    return ops;
}

/* What each op needs, at least (a shorter record is a plan of another build). */
static int min_args(int op)
{
    switch (op) {
    case Z_PLAN_STDIO: return 3;
    case Z_PLAN_KEEP: return 1;
    case Z_PLAN_SETNS: case Z_PLAN_LOOKUP: case Z_PLAN_MASK: case Z_PLAN_READONLY: return 2;
    case Z_PLAN_UNSHARE: case Z_PLAN_CHECK_MNTNS: case Z_PLAN_HOSTNAME: case Z_PLAN_DOMAINNAME:
    case Z_PLAN_ROOT: case Z_PLAN_CGROUP_WAIT: case Z_PLAN_EMPTY_TREE: case Z_PLAN_MAKE_CWD:
    case Z_PLAN_CHDIR: case Z_PLAN_PERSONALITY: case Z_PLAN_TRACE: case Z_PLAN_SECCOMP_NOW:
        return 1;
    case Z_PLAN_WRITE: case Z_PLAN_PIVOT: return 3;
    case Z_PLAN_USERNS: return 3;
    case Z_PLAN_HOOKS: case Z_PLAN_BIND_DEVICE: return 2;
    case Z_PLAN_NAMESPACES: return 1;
    case Z_PLAN_CONSOLE: return 2;
    case Z_PLAN_RLIMIT: return 4;
    case Z_PLAN_MOUNT: case Z_PLAN_MKNOD: return 7;
    case Z_PLAN_MOUNT_ENTRY: return 14;
    case Z_PLAN_MOUNT_CGROUPS: return 7;
    case Z_PLAN_CREDS: return 11;
    case Z_PLAN_EXEC: return 5;
    case Z_PLAN_ARGV: return 1;
    default: return 0;
    }
}

static int run_op(struct plan_op *o)
{
    char **a = o->a;
    struct z_target t;
    struct stat st;

    z_err(NULL, NULL);
    z_errtext = NULL;
    if (o->nargs < min_args(o->op))
        return failf("zoned-spawn: a plan of another build (op %d)", o->op);
    switch (o->op) {
    case Z_PLAN_STDIO:
        for (int i = 0; i < 3; i++)
            if (atoi(a[i]) != i && dup2(atoi(a[i]), i) < 0)
                return failf("dup2: %s", strerror(errno));
        return 0;
    case Z_PLAN_KEEP:
        return op_keep(a, o->nargs);
    case Z_PLAN_SETNS:
        if (setns(atoi(a[0]), (int)num(a[1])) < 0)
            return failf("setns: %s", strerror(errno));
        close(atoi(a[0]));
        return 0;
    case Z_PLAN_UNSHARE:
        return unshare((int)num(a[0])) < 0 ? failf("unshare: %s", strerror(errno)) : 0;
    case Z_PLAN_CHECK_MNTNS:
        if (stat("/proc/self/ns/mnt", &st) < 0 || st.st_ino == (ino_t)strtoull(a[0], NULL, 10))
            return failf("refusing to set up the rootfs in the caller's mount namespace: "
                         "linux.namespaces needs a new \"mount\" namespace");
        return 0;
    case Z_PLAN_WRITE:
        return op_write(a, strlen(a[1]));
    case Z_PLAN_LO_UP:
        return op_lo_up();
    case Z_PLAN_NAMESPACES:
        /* rootless: pasta (zoned.rootless_net), the same user, joins our namespaces: only
         * a dumpable process's are open to it */
        if (atoi(a[0]) && prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0)
            return failf("prctl: %s", strerror(errno));
        if (send(s_sock, "{\"op\":\"namespaces\"}", 19, MSG_NOSIGNAL) != 19)
            _exit(1);
        if (expect("go") < 0)
            return -1;
        return atoi(a[0]) && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 ?
            failf("prctl: %s", strerror(errno)) : 0;
    case Z_PLAN_HOSTNAME:
        return sethostname(a[0], strlen(a[0])) < 0 ? failf("sethostname: %s", strerror(errno)) : 0;
    case Z_PLAN_DOMAINNAME:
        return setdomainname(a[0], strlen(a[0])) < 0 ?
            failf("setdomainname: %s", strerror(errno)) : 0;
    case Z_PLAN_MOUNT:
        return op_mount(a);
    case Z_PLAN_ROOT:
        s_root = open(a[0], O_PATH | O_DIRECTORY | O_CLOEXEC);
        return s_root < 0 ? (z_err(NULL, a[0]), fail_ctx("")) : 0;
    case Z_PLAN_CGROUP_WAIT:  /* (it may have come while waiting for "go") */
        if (!s_in_cgroup && expect("cgroup") < 0)
            return -1;
        return atoi(a[0]) && unshare(CLONE_NEWCGROUP) < 0 ?
            failf("unshare: %s", strerror(errno)) : 0;
    case Z_PLAN_MOUNT_ENTRY:
        return op_mount_entry(a);
    case Z_PLAN_MOUNT_CGROUPS:
        return op_mount_cgroups(a, o->nargs);
    case Z_PLAN_MKNOD:
        if (z_replace_node(s_root, a[0], (mode_t)num(a[1]),
                           makedev((unsigned)num(a[2]), (unsigned)num(a[3])),
                           (uid_t)num(a[4]), (gid_t)num(a[5])) < 0)
            return fail_ctx(a[6]);
        return 0;
    case Z_PLAN_DEV_SYMLINKS:
        return op_dev_symlinks();
    case Z_PLAN_EMPTY_TREE:
        s_empty_tree = z_open_tree(AT_FDCWD, a[0], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (s_empty_tree < 0)  /* (EPERM, EACCES: the namespace's root cannot reach it) */
            return errno == EPERM || errno == EACCES ? 0 : (z_err("open_tree", a[0]), fail_ctx(""));
        if (z_mount_setattr(s_empty_tree, "", AT_EMPTY_PATH | AT_RECURSIVE, MASK_ATTRS, 0, 0,
                            -1) < 0)
            return z_err("mount_setattr", NULL), fail_ctx("");
        return 0;
    case Z_PLAN_MAKE_CWD:
        if (z_target(s_root, a[0], 'd', &t) < 0) {
            int err = errno;
            z_target_close(&t);
            return cwd_error(a[0], err);
        }
        z_target_close(&t);
        return 0;
    case Z_PLAN_PIVOT:
        return op_pivot(a);
    case Z_PLAN_MASK:
        return op_mask(a);
    case Z_PLAN_MASKS_DONE:
        if (s_empty_tree >= 0)  /* attached by a mask, or (none masked) freed */
            close(s_empty_tree);
        s_empty_tree = -1;
        return 0;
    case Z_PLAN_READONLY:
        return op_readonly(a);
    case Z_PLAN_ROOT_READONLY:
        if (z_mount_setattr(AT_FDCWD, "/", 0, MOUNT_ATTR_RDONLY, 0, 0, -1) < 0)
            return z_err("mount_setattr", "/"), fail_ctx("");
        return 0;
    case Z_PLAN_CHDIR:
        return chdir(a[0]) < 0 ? cwd_error(a[0], errno) : 0;
    case Z_PLAN_SETSID:
        return setsid() < 0 ? failf("setsid: %s", strerror(errno)) : 0;
    case Z_PLAN_CONSOLE:
        return op_console(a);
    case Z_PLAN_PERSONALITY:
        return personality(num(a[0])) < 0 ? failf("personality: %s", strerror(errno)) : 0;
    case Z_PLAN_RLIMIT:
        return op_rlimit(a);
    case Z_PLAN_LOOKUP:
        return op_lookup(a);
    case Z_PLAN_LATE:
        s_late = 1;
        return 0;
    case Z_PLAN_SECCOMP_NOW:
        if (!s_program || z_seccomp_set_filter((unsigned)num(a[0]), s_program, s_program_len) < 0)
            return failf("seccomp: %s", strerror(errno));
        return 0;
    case Z_PLAN_CREDS:
        return op_creds(a);
    case Z_PLAN_USERNS:
        return op_userns(a);
    case Z_PLAN_BIND_DEVICE:
        return op_bind_device(a);
    case Z_PLAN_HOOKS:  /* startContainer's: kept for exec_op, after the start */
        if (strcmp(a[0], "startContainer") == 0)
            return s_start_hooks = o, 0;
        return op_hooks(a, o->nargs, s_state);
    case Z_PLAN_TRACE:
        return op_trace(a[0]);
    case Z_PLAN_PROGRAM:
        return 0;
    default:
        return failf("zoned-spawn: a plan of another build (op %d)", o->op);
    }
}

/* EXEC: FIFO KEEP_PDEATHSIG SECCOMP_FLAGS LOAD_PROGRAM NARGS ARGS... ENV... */
/* argv and envp from ARGS... ENV... (their texts stay the plan's), after `first` args. */
static int split_argv(char **a, int count, int first, char ***argv, char ***envp)
{
    int nargs = atoi(a[first - 1]);
    if (nargs < 1 || first + nargs > count)
        return failf("zoned-spawn: a plan of another build (argv)");
    *argv = calloc((size_t)nargs + 1, sizeof(char *));
    *envp = calloc((size_t)(count - first - nargs) + 1, sizeof(char *));
    if (!*argv || !*envp)
        return failf("%s", strerror(errno));
    memcpy(*argv, a + first, sizeof(char *) * (size_t)nargs);
    memcpy(*envp, a + first + nargs, sizeof(char *) * (size_t)(count - first - nargs));
    return 0;
}

/* A zone made ahead (zoned.pool) gets its process with "start", as a plan of its own
 * (zoned.child.initplan.compile_late): its cwd, the path lookup, its args and env; only
 * those ops (not a program: the zone's filter stays the one it was made with). */
static int late_plan(int fd, char ***argv, char ***envp)
{
    int count = 0, have_argv = 0;
    struct plan_op *ops = read_plan(fd, &count);  /* (a program in it: refused below) */

    close(fd);
    if (!ops)
        return failf("zoned-spawn: a start plan it cannot read (of another build?)");
    s_exec_path = NULL;
    for (int i = 0; i < count; i++) {
        if (ops[i].op == Z_PLAN_ARGV && ops[i].nargs >= 1 && !have_argv) {
            if (split_argv(ops[i].a, ops[i].nargs, 1, argv, envp) < 0)
                return -1;
            have_argv = 1;
        } else if (ops[i].op == Z_PLAN_CHDIR || ops[i].op == Z_PLAN_LOOKUP) {
            if (run_op(&ops[i]) < 0)
                return -1;
        } else {
            return failf("zoned-spawn: a start plan of another build (op %d)", ops[i].op);
        }
    }
    if (!have_argv || !s_exec_path)
        return failf("zoned-spawn: a start plan without a process");
    return 0;
}

static int exec_op(struct plan_op *o)
{
    int late = atoi(o->a[3]), sock = s_sock, start_fd = -1, code;
    char **argv, **envp;
    if (5 + atoi(o->a[4]) > o->nargs || (!s_exec_path && !s_late) || (late && !s_program))
        return failf("zoned-spawn: a plan of another build (exec)");
    if (split_argv(o->a, o->nargs, 5, &argv, &envp) < 0)
        return -1;
    if ((code = init_wait(&sock, atoi(o->a[0]), atoi(o->a[1]), s_late ? &start_fd : NULL)))
        return code;
    s_sock = sock;  /* (-1 once a created zone's creator has gone: errors on stderr) */
    if (s_late && late_plan(start_fd, &argv, &envp) < 0)
        return -1;
    if (s_start_hooks && op_hooks(s_start_hooks->a, s_start_hooks->nargs, s_state_running) < 0)
        return -1;
    return init_exec(sock, (unsigned)num(o->a[2]), late ? s_program : NULL,
                     late ? s_program_len : 0, s_exec_path, argv, envp);
}

/* Default dispositions and an empty mask: what the caller ignored (python: SIGPIPE,
 * SIGXFSZ; a nohup'ed program: SIGHUP) must not be ignored by the container's process. */
static void reset_signals(void)
{
    sigset_t none;
    for (int sig = 1; sig < _NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static int setup_main(int argc, char **argv)
{
    struct plan_op *ops;
    int count = 0, plan_fd;

    if (argc < 4)
        return 2;
    s_sock = atoi(argv[2]);
    plan_fd = atoi(argv[3]);
    /* EOF on the sync socket covers a creator that died before this */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        return 1;
    reset_signals();
    ops = read_plan(plan_fd, &count);
    close(plan_fd);
    if (!ops) {
        failf("zoned-spawn: a plan it cannot read (of another build?)");
        return report_error(s_sock, s_msg, 0);
    }
    for (int i = 0; i < count; i++) {
        if (ops[i].op == Z_PLAN_EXEC) {  /* returns only on failure */
            int code = exec_op(&ops[i]);
            /* (else reported; s_cmd_errno: a start plan's lookup, 127 or 126) */
            return code < 0 ? report_error(s_sock, s_msg, s_cmd_errno) : code;
        }
        if (run_op(&ops[i]) < 0)
            return report_error(s_sock, s_msg, s_cmd_errno);
    }
    failf("zoned-spawn: a plan without an end");
    return report_error(s_sock, s_msg, 0);
}
