/*
 * The OCI hooks a container's init runs (zoned.oci.hooks.run_one's way, for the C init):
 * createContainer in the container's namespaces before pivot_root, startContainer once
 * started, just before the exec. Each is forked and exec'd with the container's state on
 * stdin (the very JSON zoned sent with "cgroup": "state", or "state_running"), stderr read
 * for its last line, in the bundle (where that is reachable), killed at its timeout. Part
 * of csrc/setup.c (one translation unit: zoned-spawn).
 */
#include <poll.h>
#include <sys/wait.h>

static char *s_state;           /* "state" of the "cgroup" message, as zoned serialized it */
static char *s_state_running;   /* the same with "status": "running" (startContainer's) */

/* The text of the top-level `key`'s value (json_top_value) where that value is an object:
 * a copy (malloc), or NULL. */
static char *json_top_object(const char *p, const char *key)
{
    const char *q = json_top_value(p, key), *start = q;
    int inner = 0;
    if (!q || *q != '{')
        return NULL;
    for (; *q; q++) {
        if (*q == '"') {
            for (q++; *q && *q != '"'; q += (*q == '\\' && q[1]) ? 2 : 1)
                ;
            if (!*q)
                return NULL;
        } else if (*q == '{' || *q == '[') {
            inner++;
        } else if ((*q == '}' || *q == ']') && --inner == 0) {
            return strndup(start, (size_t)(q - start + 1));
        }
    }
    return NULL;
}

/* "cgroup" with the state for the hooks: kept for them. */
static void keep_states(const char *msg)
{
    if (!s_state)
        s_state = json_top_object(msg, "state");
    if (!s_state_running)
        s_state_running = json_top_object(msg, "state_running");
}

/* Writes all of `data` to fd; a reader that has gone (a hook that does not read its stdin)
 * is no error: SIGPIPE is ignored for the write. */
static void write_all_quiet(int fd, const char *data, size_t len)
{
    struct sigaction ign = {0}, old;
    ign.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ign, &old);
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        data += n;
        len -= (size_t)n;
    }
    sigaction(SIGPIPE, &old, NULL);
}

/* One read of the hook's stderr into tail[] (its last 4096 bytes, `got` of them so far);
 * at EOF or an error (a drained non-blocking pipe too) *fd is closed and set to -1. */
static size_t keep_tail(int *fd, char *tail, size_t got)
{
    char chunk[4096];
    ssize_t n = read(*fd, chunk, sizeof(chunk));
    if (n <= 0) {
        if (n < 0 && errno == EINTR)
            return got;
        close(*fd);
        *fd = -1;
        return got;
    }
    if (got + (size_t)n > 4096) {
        size_t drop = got + (size_t)n - 4096;
        memmove(tail, tail + drop, got - drop);
        got -= drop;
    }
    memcpy(tail + got, chunk, (size_t)n);
    return got + (size_t)n;
}

/* hooks.run_one: "" if it ran and exited 0, else why (into why[]): "exit status N[: the
 * last line of its stderr]", "killed by signal N", "timed out after Ns". */
static const char *run_hook(const char *path, long timeout, char **args, char **env,
                            const char *state, char *why, size_t size)
{
    static char err[4096 + 1];
    char bundle[PATH_MAX];
    int in[2], errp[2], pidfd, status = 0;
    size_t got = 0;
    struct timespec t0, now;
    pid_t pid;

    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0)
        return snprintf(why, size, "pipe2: %s", strerror(errno)), why;
    pid = fork();
    if (pid < 0)
        return snprintf(why, size, "fork: %s", strerror(errno)), why;
    if (pid == 0) {
        if (dup2(in[0], 0) < 0 || dup2(errp[1], 2) < 0)
            _exit(127);
        /* in the bundle, as runc runs its hooks (a hook after pivot_root: no such path) */
        if (!json_top_string(state, "bundle", bundle, sizeof(bundle)) || chdir(bundle) < 0) {
            if (chdir("/") < 0) {
                /* stays where it is */
            }
        }
        /* stdin, stdout and stderr only (runc's hooks get no ExtraFiles): not the sync
         * socket, the namespaces to join, exec.fifo or the preserved fds */
        syscall(SYS_close_range, 3, ~0U, 0);
        execve(path, args, env);
        dprintf(2, "exec: [Errno %d] %s: '%s'", errno, strerror(errno), path);
        _exit(127);
    }
    close(in[0]);
    close(errp[1]);
    write_all_quiet(in[1], state, strlen(state));
    close(in[1]);
    pidfd = (int)syscall(SYS_pidfd_open, pid, 0);  /* (-1 on an old kernel: 2 ms polls) */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct pollfd fds[2] = {{errp[0], POLLIN, 0}, {pidfd, POLLIN, 0}};
        int wait_ms = pidfd < 0 ? 2 : -1;
        if (waitpid(pid, &status, WNOHANG) == pid)
            break;
        if (timeout > 0) {
            long left;
            clock_gettime(CLOCK_MONOTONIC, &now);
            left = timeout * 1000 - ((now.tv_sec - t0.tv_sec) * 1000 +
                                     (now.tv_nsec - t0.tv_nsec) / 1000000);
            if (left <= 0) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                if (errp[0] >= 0)
                    close(errp[0]);
                if (pidfd >= 0)
                    close(pidfd);
                return snprintf(why, size, "timed out after %lds", timeout), why;
            }
            if (wait_ms < 0 || left < wait_ms)
                wait_ms = (int)left;
        }
        if (poll(errp[0] >= 0 ? fds : fds + 1, errp[0] >= 0 ? 2 : 1, wait_ms) < 0 &&
            errno != EINTR)
            break;
        if (errp[0] >= 0 && fds[0].revents)
            got = keep_tail(errp, err, got);
    }
    if (errp[0] >= 0) {  /* what is there already, not waiting for the hook's children */
        fcntl(errp[0], F_SETFL, O_NONBLOCK);
        while (errp[0] >= 0)
            got = keep_tail(errp, err, got);
    }
    if (pidfd >= 0)
        close(pidfd);
    err[got] = 0;
    if (WIFSIGNALED(status))
        return snprintf(why, size, "killed by signal %d", WTERMSIG(status)), why;
    if (WEXITSTATUS(status)) {
        char *end = err + got, *line;
        while (end > err && strchr(" \t\n\r\v\f", end[-1]))
            *--end = 0;
        line = strrchr(err, '\n');
        if (line) {
            line++;
        } else {  /* (the text stripped as a whole: one line's leading blanks too) */
            for (line = err; line < end && strchr(" \t\r\v\f", *line); line++)
                ;
        }
        snprintf(why, size, "exit status %d%s%s", WEXITSTATUS(status), *line ? ": " : "",
                 line);
        return why;
    }
    return "";
}

/* hooks.run for KIND (fatal kinds only): KIND COUNT, then for each hook PATH TIMEOUT
 * NARGS ARGS... NENV ENV... (its env as KEY=VALUE, normalized by zoned). The first that
 * fails fails the init: "KIND hook PATH: why". `state` NULL: zoned sent none. */
static int op_hooks(char **a, int nargs, const char *state)
{
    static char why[4096 + 64];
    int count = atoi(a[1]), i = 2;

    if (!state)
        return failf("zoned-spawn: %s hooks without the zone's state", a[0]);
    for (int h = 0; h < count; h++) {
        char **args, **env, *path;
        long timeout;
        int nargv, nenv;
        const char *fail;
        if (i + 3 > nargs)
            return failf("zoned-spawn: a plan of another build (hooks)");
        path = a[i];
        timeout = strtol(a[i + 1], NULL, 10);
        nargv = atoi(a[i + 2]);
        if (i + 3 + nargv + 1 > nargs || i + 3 + nargv + 1 + atoi(a[i + 3 + nargv]) > nargs)
            return failf("zoned-spawn: a plan of another build (hooks)");
        nenv = atoi(a[i + 3 + nargv]);
        args = calloc((size_t)nargv + 1, sizeof(char *));
        env = calloc((size_t)nenv + 1, sizeof(char *));
        if (!args || !env)
            return failf("zoned-spawn: out of memory");
        memcpy(args, a + i + 3, sizeof(char *) * (size_t)nargv);
        memcpy(env, a + i + 4 + nargv, sizeof(char *) * (size_t)nenv);
        fail = run_hook(path, timeout, args, env, state, why, sizeof(why));
        free(args);
        free(env);
        if (*fail)
            return failf("%s hook %s: %s", a[0], path, fail);
        i += 4 + nargv + nenv;
    }
    return 0;
}
