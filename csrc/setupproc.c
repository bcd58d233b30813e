/*
 * The C init's process steps (security.py and process.py's last ones): rlimits, the
 * command's lookup, credentials and capabilities, lo, the fds kept, trace marks. Part
 * of csrc/setup.c (one translation unit: zoned-spawn).
 */
static int op_rlimit(char **a)
{
    struct rlimit r = {strtoull(a[1], NULL, 10), strtoull(a[2], NULL, 10)};
    if (setrlimit((int)num(a[0]), &r) == 0)
        return 0;
    /* Python's resource.setrlimit words, which the tests and users have seen */
    return failf("%s: %s", a[3], errno == EINVAL ? "current limit exceeds maximum limit" :
                 errno == EPERM ? "not allowed to raise maximum limit" : strerror(errno));
}

static int is_exec_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* process.lookup_path: argv[0] in the container's PATH, as execvp would, with runc's
 * messages (podman maps them to 127 and 126). */
static int op_lookup(char **a)
{
    static char cand[PATH_MAX];
    const char *cmd = a[0], *p = a[1];
    struct stat st;
    if (strchr(cmd, '/')) {
        if (stat(cmd, &st) < 0) {
            s_cmd_errno = ENOENT;
            return failf("exec: \"%s\": stat %s: no such file or directory", cmd, cmd);
        }
        if (!is_exec_file(cmd)) {
            s_cmd_errno = EACCES;
            return failf("exec: \"%s\": permission denied", cmd);
        }
        s_exec_path = cmd;
        return 0;
    }
    for (;;) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *dir = len ? p : ".";
        int dlen = len ? (int)len : 1;
        if (snprintf(cand, sizeof(cand), "%.*s%s%s", dlen, dir,
                     dir[dlen - 1] == '/' ? "" : "/", cmd) < (int)sizeof(cand) &&
            is_exec_file(cand)) {
            s_exec_path = cand;
            return 0;
        }
        if (!end)
            break;
        p = end + 1;
    }
    s_cmd_errno = ENOENT;
    return failf("exec: \"%s\": executable file not found in $PATH", cmd);
}

static int id_error(const char *field, const char *value, int err)
{
    return failf("invalid process.user.%s %s: %s%s", field, value, strerror(err),
                 err == EINVAL ? " (not mapped in the zone's user namespace)" : "");
}

/* A failure of z_set_creds (csrc/zoned.c) at `step`, in the words the tests and users have
 * seen (security.apply_user_and_caps's): into s_msg, -1. */
static int creds_failure(char *const *a, int step, int err)
{
    static const char *const calls[] = {
        [Z_CREDS_KEEPCAPS] = "prctl(PR_SET_KEEPCAPS)", [Z_CREDS_BOUNDING] = "prctl(PR_CAPBSET_DROP)",
        [Z_CREDS_CAPSET] = "capset", [Z_CREDS_PRCTL] = "prctl",
        [Z_CREDS_AMBIENT] = "prctl(PR_CAP_AMBIENT)", [Z_CREDS_NNP] = "prctl(PR_SET_NO_NEW_PRIVS)"};
    if (step == Z_CREDS_GROUPS)
        return id_error("additionalGids", a[2], err);
    if (step == Z_CREDS_GID)
        return id_error("gid", a[4], err);
    if (step == Z_CREDS_UID)
        return id_error("uid", a[3], err);
    return failf("%s: %s", step > 0 && step <= Z_CREDS_NNP && calls[step] ? calls[step] : "prctl",
                 strerror(err));
}

/* The same for zoned-spawn's exec, whose process took them (z_spawn_exec_joining). */
static const char *creds_message(char *const *a, int step, int err)
{
    creds_failure(a, step, err);
    return s_msg;
}

/* security.apply_user_and_caps. Then non-dumpable and pdeathsig again: the changes reset
 * both. */
static int op_creds(char **a)
{
    int step;

    if (z_set_creds(a, &step) < 0)
        return creds_failure(a, step, errno);
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 || prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        return failf("prctl: %s", strerror(errno));
    return 0;
}

/*
 * process.run_userns_stage: USERNS_FD (-1: a new user namespace, which zoned maps when told
 * "userns"; else one to join), PIDNS ("": none of its own, "-": a new one, else the path of
 * one to join), ROOTLESS (zoned runs as this process's own user, and newuidmap maps it only
 * while it is dumpable). In the namespace this process becomes its root (if the maps have
 * one) and makes or joins the pid namespace, owned by it so that /proc can be mounted;
 * then it clones the rest of the init with CLONE_PARENT: zoned's child (PID 1 of a new pid
 * namespace), whose pid it tells zoned ("pid") before it exits. Only the clone goes on
 * with the plan.
 */
static int op_userns(char **a)
{
    static const char userns[] = "{\"op\":\"userns\"}";
    int ufd = atoi(a[0]), len, gate[2];
    const char *pidns = a[1];
    char msg[64];
    long pid;

    if (ufd >= 0) {
        if (setns(ufd, CLONE_NEWUSER) < 0)
            return failf("setns: %s", strerror(errno));
        close(ufd);
    } else {
        if (unshare(CLONE_NEWUSER) < 0)
            return failf("unshare: %s", strerror(errno));
        if (atoi(a[2]) && prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0)
            return failf("prctl: %s", strerror(errno));
        if (send(s_sock, userns, sizeof(userns) - 1, MSG_NOSIGNAL) != (ssize_t)sizeof(userns) - 1)
            _exit(1);
        if (expect("mapped") < 0)
            return -1;
    }
    if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0) {
        /* (no root in the maps: as the process's user, as in python) */
    }
    /* the credential changes reset both; the clone's pdeathsig is its own (below) */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        return failf("prctl: %s", strerror(errno));
    if (strcmp(pidns, "-") == 0) {
        if (unshare(CLONE_NEWPID) < 0)
            return failf("unshare: %s", strerror(errno));
    } else if (*pidns) {
        int fd = open(pidns, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return failf("%s: %s", strerror(errno), pidns);
        if (setns(fd, CLONE_NEWPID) < 0) {
            close(fd);
            return failf("setns: %s", strerror(errno));
        }
        close(fd);
    }
    /* The clone waits until this process has said its pid and gone (EOF on the gate): an
     * error of the clone's must not reach zoned first, or zoned could not reap it. */
    if (pipe2(gate, O_CLOEXEC) < 0)
        return failf("pipe2: %s", strerror(errno));
    pid = syscall(SYS_clone, CLONE_PARENT, 0, NULL, NULL, 0);
    if (pid < 0)
        return failf("clone: %s", strerror(errno));
    if (pid == 0) {  /* the init: zoned's child, as without a user namespace */
        char c;
        close(gate[1]);
        while (read(gate[0], &c, 1) < 0 && errno == EINTR)
            ;
        close(gate[0]);
        return prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 ?
            failf("prctl: %s", strerror(errno)) : 0;
    }
    len = snprintf(msg, sizeof(msg), "{\"op\":\"pid\",\"pid\":%ld}", pid);
    _exit(send(s_sock, msg, (size_t)len, MSG_NOSIGNAL) == len ? 0 : 1);
}

/* process._lo_up: lo up in a fresh network namespace. */
static int op_lo_up(void)
{
    struct ifreq ifr;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), rc = -1;
    memset(&ifr, 0, sizeof(ifr));
    strcpy(ifr.ifr_name, "lo");
    if (s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP;
        rc = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    if (rc < 0)
        failf("%s: lo", strerror(errno));
    if (s >= 0)
        close(s);
    return rc;
}

/* FIRST FD...: close every fd from FIRST on (0-2 and the preserved ones lie below) but
 * these and the sync socket (process._close_fds_except), and make those close on exec. */
static int op_keep(char **a, int nargs)
{
    int *keep = calloc((size_t)nargs + 2, sizeof(int)), n = 0, last;
    if (!keep)
        return failf("%s", strerror(errno));
    last = atoi(a[0]) - 1;
    keep[n++] = s_sock;
    for (int i = 1; i < nargs; i++)
        keep[n++] = atoi(a[i]);
    for (int i = 0; i < n; i++)  /* the init's own (namespaces, idmaps, the fifo): never
                                    the container's process's */
        fcntl(keep[i], F_SETFD, FD_CLOEXEC);
    for (int i = 1; i < n; i++)  /* (insertion sort: a handful) */
        for (int j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
            int t = keep[j];
            keep[j] = keep[j - 1];
            keep[j - 1] = t;
        }
    keep[n++] = INT_MAX;
    for (int i = 0; i < n; i++) {
        if (keep[i] > last + 1)
            z_close_range((unsigned)last + 1,
                          keep[i] == INT_MAX ? ~0U : (unsigned)keep[i] - 1, 0);
        if (keep[i] > last)
            last = keep[i];
    }
    free(keep);
    return 0;
}

static int op_trace(const char *step)
{
    struct timespec ts;
    char line[128];
    int n;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    n = snprintf(line, sizeof(line), "zoned-trace %s %.3f\n", step,
                 (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6);
    if (write(2, line, (size_t)n) < 0) {
        /* a trace only */
    }
    return 0;
}
