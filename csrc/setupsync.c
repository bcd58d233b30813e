/*
 * The C init's side of the sync socket (zoned.child.sync): zoned's messages read with
 * their fds, the cgroup join they ask for, the terminal's master sent back. Part of
 * csrc/setup.c (one translation unit: zoned-spawn).
 */

static void keep_states(const char *msg);  /* (setuphooks.c) */

/* A message of zoned's on the sync socket and its fds (at most 32); gone or cut short:
 * exit (zoned has gone, or it was never a message of its). */
static ssize_t recv_msg(char *buf, size_t size, int *fds, int *nfds)
{
    ssize_t n = recv_with_fds(s_sock, buf, size, fds, 32, nfds);
    if (n <= 0)
        _exit(1);
    return n;
}

/* Where the value of the top-level `key` of a JSON object (a message of zoned's) starts,
 * or NULL if it has none. Strings and nested values are skipped as JSON defines them: a
 * key inside one (a zone's annotation or label, in "state") is never taken for it. */
static const char *json_top_value(const char *p, const char *key)
{
    size_t klen = strlen(key);
    int depth = 0;
    for (; *p; p++) {
        if (*p == '{' || *p == '[') {
            depth++;
        } else if (*p == '}' || *p == ']') {
            depth--;
        } else if (*p == '"') {
            const char *s = ++p, *q;
            while (*p && *p != '"')
                p += (*p == '\\' && p[1]) ? 2 : 1;
            if (!*p)
                return NULL;
            if (depth != 1 || (size_t)(p - s) != klen || memcmp(s, key, klen) != 0)
                continue;
            for (q = p + 1; *q == ' '; q++)
                ;
            if (*q != ':')
                continue;  /* a value that reads like the key */
            for (q++; *q == ' '; q++)
                ;
            return q;
        }
    }
    return NULL;
}

/* The string value of the top-level `key` (json_top_value), or NULL if it has none or not
 * a plain one (no escapes). */
static const char *json_top_string(const char *p, const char *key, char *out, size_t size)
{
    const char *q = json_top_value(p, key), *s;
    if (!q || *q++ != '"')
        return NULL;
    for (s = q; *q && *q != '"' && *q != '\\'; q++)
        ;
    if (*q != '"' || (size_t)(q - s) >= size)
        return NULL;
    memcpy(out, s, (size_t)(q - s));
    out[q - s] = 0;
    return out;
}

/* zoned.cgroups.join.join: write "0" to each v1 `tasks` file sent; with "node", the last fd
 * is the shared memory cgroup's parent, and node its name there (one component), made
 * again if another zone's removal took it. */
static int join_cgroups(const char *msg, int *fds, int nfds)
{
    char node[NAME_MAX + 1], path[NAME_MAX + 16];
    struct open_how how = {0};
    int rc = 0, files = nfds;

    if (json_top_string(msg, "node", node, sizeof(node))) {
        if (nfds < 1 || !node[0] || strchr(node, '/') || strcmp(node, ".") == 0 ||
            strcmp(node, "..") == 0)
            rc = failf("joining the cgroup: a bad message from zoned");
        files = nfds - 1;
    }
    for (int i = 0; rc == 0 && i < files; i++)
        if (write(fds[i], "0", 1) != 1)
            rc = failf("joining the cgroup: %s", strerror(errno));
    how.flags = O_WRONLY | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    for (int attempt = 0; rc == 0 && files < nfds && attempt < 3; attempt++) {
        int last = attempt == 2, fd;
        snprintf(path, sizeof(path), "%s/tasks", node);
        fd = (int)syscall(SYS_openat2, fds[nfds - 1], path, &how, sizeof(how));
        if (fd < 0) {
            if (errno != ENOENT || last)
                rc = failf("%s: %s", strerror(errno), path);
            else if (mkdirat(fds[nfds - 1], node, 0755) < 0 && errno != EEXIST)
                rc = failf("%s: %s", strerror(errno), node);
            continue;
        }
        if (write(fd, "0", 1) == 1) {
            close(fd);
            break;
        }
        if ((errno != ENODEV && errno != ENOENT) || last)
            rc = failf("%s: %s", strerror(errno), path);
        close(fd);
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    return rc;
}

/* process._child's expect: read until `name` arrives; "cgroup" may come first, any time. */
static int expect(const char *name)
{
    static char buf[1 << 16];
    int fds[32], nfds;
    for (;;) {
        ssize_t n = recv_msg(buf, sizeof(buf), fds, &nfds);
        if (op_is(buf, n, "cgroup")) {
            if (join_cgroups(buf, fds, nfds) < 0)
                return -1;
            keep_states(buf);  /* (for the hooks, if it has them) */
            s_in_cgroup = 1;
            if (strcmp(name, "cgroup") == 0)
                return 0;
            continue;
        }
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        if (!op_is(buf, n, name))
            _exit(1);
        return 0;
    }
}

/* console.bind_console: /dev/console becomes the pty: bound by fd (a clone of the slave's
 * own mount: no path of the rootfs's decides what is bound), onto a file of /dev opened
 * without following any symlink (made if missing); a symlink there is refused. */
static int bind_console(int slave)
{
    struct open_how how = {0};
    struct stat st;
    int dev, target = -1, tree = -1, rc = -1, err;

    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    if ((dev = (int)syscall(SYS_openat2, AT_FDCWD, "/dev", &how, sizeof(how))) < 0)
        return z_err("openat2", "/dev"), -1;
    how.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC;
    how.resolve |= RESOLVE_BENEATH;
    target = (int)syscall(SYS_openat2, dev, "console", &how, sizeof(how));
    if (target < 0 && errno == ENOENT) {
        int f = openat(dev, "console", O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC,
                       0600);
        if (f >= 0)
            close(f);
        target = (int)syscall(SYS_openat2, dev, "console", &how, sizeof(how));
    }
    if (target < 0)
        z_err("openat2", "console");
    else if (fstat(target, &st) < 0 || S_ISLNK(st.st_mode))
        errno = ELOOP, z_err(NULL, "/dev/console"), z_errtext = "a symbolic link in the rootfs";
    else if ((tree = z_open_tree(slave, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC |
                                            AT_EMPTY_PATH)) < 0)
        z_err("open_tree", NULL);
    else if (z_move_mount(tree, "", target, "",
                          MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        z_err("move_mount", NULL);
    else
        rc = 0;
    err = errno;
    close(dev);
    if (target >= 0)
        close(target);
    if (tree >= 0)
        close(tree);
    errno = err;
    return rc;
}

/* process._console: a pty from the container's own devpts (so `tty` works inside), its
 * slave our controlling terminal and /dev/console; the master goes to zoned, which relays
 * it or hands it to a console socket (runc's way). ROWS COLS (-1 -1: no size given). */
static int op_console(char **a)
{
    static char msg[128];
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov;
    struct msghdr mh;
    struct cmsghdr *c;
    unsigned int n, unlock = 0;
    long rows = strtol(a[0], NULL, 10), cols = strtol(a[1], NULL, 10);
    char slave_path[64];
    int master, slave, len;

    if ((master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0)
        return z_err(NULL, "/dev/ptmx"), fail_ctx("");
    if (ioctl(master, TIOCSPTLCK, &unlock) < 0 || ioctl(master, TIOCGPTN, &n) < 0 ||
        (slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0)
        return z_err(NULL, "/dev/ptmx"), fail_ctx("");
    snprintf(slave_path, sizeof(slave_path), "/dev/pts/%u", n);
    if (rows >= 0 && cols >= 0) {  /* (-1 -1: no size given) */
        struct winsize ws = {(unsigned short)rows, (unsigned short)cols, 0, 0};
        ioctl(master, TIOCSWINSZ, &ws);
    }
    if (bind_console(slave) < 0)
        return fail_ctx("");
    if (setsid() < 0 && errno != EPERM)
        return failf("setsid: %s", strerror(errno));
    if (ioctl(slave, TIOCSCTTY, 0) < 0)
        return failf("%s: TIOCSCTTY", strerror(errno));
    for (int i = 0; i < 3; i++)
        if (dup2(slave, i) < 0)
            return failf("dup2: %s", strerror(errno));
    if (slave > 2)
        close(slave);
    len = snprintf(msg, sizeof(msg), "{\"op\":\"console\",\"name\":\"%s\"}", slave_path);
    iov.iov_base = msg;
    iov.iov_len = (size_t)len;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof(cbuf);
    c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &master, sizeof(int));
    if (sendmsg(s_sock, &mh, MSG_NOSIGNAL) != len)
        _exit(1);
    close(master);
    return 0;
}
