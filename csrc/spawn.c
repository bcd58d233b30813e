/*
 * zoned-spawn: the last step of `zoned exec`, so that no process inside a container ever has
 * a host binary as its exe.
 *
 * zoned's exec helper (Python, outside the container's pid namespace, set up for it) execs
 * this from a sealed, execute-only memfd copy; it then makes the real process inside the
 * container's pid namespace with z_spawn_exec (csrc/zoned.c). Until that process execs, it
 * is a non-dumpable copy of this one: its /proc/PID/exe is the sealed memfd (nothing can be
 * written through it), never python, and as the copy is not readable by the container's user
 * its memory belongs to the host's user namespace (fs/exec.c would_dump), so ptrace and
 * /proc/PID/{mem,fd} need CAP_SYS_PTRACE there.
 *
 * It is also a container's init: `zoned-spawn setup SOCK PLAN_FD` (csrc/setupplan.c) is
 * exec'd by zoned's child at once and sets the container up in C from a plan; or, where
 * the init is set up in Python, `zoned-spawn init ...` (init_main below) is its last step,
 * exec'd before it reports "ready". Either way a created zone's PID 1 is this sealed copy
 * while it waits for `start`, never the host's python.
 *
 * Usage: zoned-spawn SOCK PDEATHSIG PARENT_PIDFD TTY SECCOMP_FLAGS BPF_FD CGROUPS CREDS
 *                    USERNS PATH ARGV0 ARGS...
 *   SOCK          zoned's sync socket: gets {"op":"made","pid":N,"joined":J}, answers when
 *                 the process is in the container's cgroup (J=1: it joined them itself),
 *                 then gets {"op":"spawned","pid":N,"errno":E,"step":S} once it has exec'd
 *                 (errno 0) or failed
 *   BPF_FD        a pipe holding the seccomp filter to load last (-1: none)
 *   CGROUPS       "-", or "FD2,T1,T2,...": the cgroup2 directory (-1: none) and the v1
 *                 `tasks` files it joins itself (z_spawn_exec_joining)
 *   CREDS         "-", or the process's user and capabilities that it takes itself after the
 *                 filter is loaded (z_set_creds's 11 fields, separated by ';'): the filter
 *                 of a profile without no_new_privs needs CAP_SYS_ADMIN, so zoned's helper
 *                 keeps its own until then
 *   USERNS        "-", or the fd of the zone's user namespace, which the process joins once
 *                 in its cgroups (with CREDS): zoned's helper stays in the host's, where
 *                 the clone into the cgroup2 cgroup is allowed
 * The environment is the process's. Built static (Makefile): cc -static -Os -s -Icsrc
 * -o zoned/libexec/zoned-spawn csrc/spawn.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <linux/magic.h>

#include "zoned.h"
#include "zoned.c"  /* z_spawn_exec, z_seccomp_set_filter */

extern char **environ;

static int init_main(int argc, char **argv);
static int setup_main(int argc, char **argv);
static size_t json_escape(char *out, size_t size, const char *s);
static const char *creds_message(char *const *a, int step, int err);

static void cloexec(int fd)
{
    if (fd >= 0)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
}

int main(int argc, char **argv)
{
    static unsigned char bpf[1 << 16];
    size_t bpf_len = 0;
    int sock, pdeathsig, parent_pidfd, tty, bpf_fd, go_pipe[2], err_pipe[2];
    int report[2] = {0, 0};
    unsigned int seccomp_flags;
    char msg[1024], why[768] = "", go = 'g';
    int pid, n, joined = 0, cgroup_fd = -1, tasks[32], ntasks = 0, userns_fd = -1;
    char *creds[11], **given_creds = NULL;

    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);  /* before anything: exec made it dumpable */
    if (argc > 1 && strcmp(argv[1], "init") == 0)
        return init_main(argc, argv);
    if (argc > 1 && strcmp(argv[1], "setup") == 0)
        return setup_main(argc, argv);
    if (argc < 12)
        return 2;
    sock = atoi(argv[1]);
    pdeathsig = atoi(argv[2]);
    parent_pidfd = atoi(argv[3]);
    tty = atoi(argv[4]);
    seccomp_flags = (unsigned int)strtoul(argv[5], NULL, 10);
    bpf_fd = atoi(argv[6]);
    if (strcmp(argv[7], "-") != 0) {
        char *p = argv[7];
        cgroup_fd = (int)strtol(p, &p, 10);
        while (*p == ',' && ntasks < (int)(sizeof(tasks) / sizeof(tasks[0])))
            tasks[ntasks++] = (int)strtol(p + 1, &p, 10);
        cloexec(cgroup_fd);
        for (int i = 0; i < ntasks; i++)
            cloexec(tasks[i]);
    }
    if (strcmp(argv[8], "-") != 0) {
        char *p = argv[8];
        size_t i = 0;
        for (; i < sizeof(creds) / sizeof(creds[0]) && p; i++) {
            creds[i] = p;
            if ((p = strchr(p, ';')) != NULL)
                *p++ = '\0';
        }
        if (i < sizeof(creds) / sizeof(creds[0]) || p)
            return 2;
        given_creds = creds;
    }
    if (strcmp(argv[9], "-") != 0)
        cloexec(userns_fd = atoi(argv[9]));
    cloexec(sock);
    cloexec(parent_pidfd);
    if (bpf_fd >= 0) {
        ssize_t got;
        while (bpf_len < sizeof(bpf) &&
               (got = read(bpf_fd, bpf + bpf_len, sizeof(bpf) - bpf_len)) > 0)
            bpf_len += (size_t)got;
        close(bpf_fd);
    }
    if (pipe2(go_pipe, O_CLOEXEC) < 0 || pipe2(err_pipe, O_CLOEXEC) < 0)
        return 1;
    pid = z_spawn_exec_joining(argv[10], argv + 11, environ, bpf, bpf_len, seccomp_flags,
                               pdeathsig, parent_pidfd, tty, go_pipe[0], err_pipe[1],
                               cgroup_fd, tasks, ntasks, given_creds, userns_fd, &joined);
    close(go_pipe[0]);
    close(err_pipe[1]);
    for (int i = 0; i < ntasks; i++)
        close(tasks[i]);
    if (cgroup_fd >= 0)
        close(cgroup_fd);
    if (userns_fd >= 0)
        close(userns_fd);
    if (pid > 0) {
        n = snprintf(msg, sizeof(msg), "{\"op\":\"made\",\"pid\":%d,\"joined\":%d}", pid,
                     joined);
        if (send(sock, msg, (size_t)n, 0) != n || recv(sock, msg, sizeof(msg), 0) <= 0)
            return 1;  /* zoned is gone: the child reads EOF and exits */
        if (write(go_pipe[1], &go, 1) != 1)
            return 1;
        close(go_pipe[1]);
        size_t got = 0;
        while (got < sizeof(report) &&
               (n = (int)read(err_pipe[0], (char *)report + got, sizeof(report) - got)) > 0)
            got += (size_t)n;
        if (got < sizeof(report))
            report[0] = report[1] = 0;
    } else {
        pid = 0;
        report[0] = errno;
        report[1] = 0;
    }
    if (given_creds && report[1] > Z_STEP_CREDS)  /* its user or caps: the init's words */
        json_escape(why, sizeof(why), creds_message(given_creds, report[1] - Z_STEP_CREDS,
                                                    report[0]));
    n = snprintf(msg, sizeof(msg),
                 "{\"op\":\"spawned\",\"pid\":%d,\"errno\":%d,\"step\":%d%s%s%s}", pid,
                 report[0], report[1], *why ? ",\"message\":\"" : "", why, *why ? "\"" : "");
    return send(sock, msg, (size_t)n, 0) == n ? 0 : 1;
}

/* -- the container's init, from "ready" to execve ---------------------------------------- */

/* Reads the seccomp filter from a pipe (the no_new_privs case: loaded just before execve). */
static size_t read_bpf(int fd, unsigned char *buf, size_t size)
{
    size_t len = 0;
    ssize_t got;
    if (fd < 0)
        return 0;
    while (len < size && (got = read(fd, buf + len, size - len)) > 0)
        len += (size_t)got;
    close(fd);
    return len;
}

/* 1 if a JSON message from zoned (json.dumps: {"op": "NAME", ...}) has op NAME. */
static int op_is(const char *msg, ssize_t len, const char *name)
{
    const char *p, *end = msg + len;
    size_t n = strlen(name);
    if (len <= 0 || !(p = memmem(msg, (size_t)len, "\"op\"", 4)))
        return 0;
    p += 4;
    while (p < end && (*p == ' ' || *p == ':'))
        p++;
    return end - p > (ssize_t)n + 1 && p[0] == '"' && memcmp(p + 1, name, n) == 0 &&
           p[n + 1] == '"';
}

/* The length of the UTF-8 sequence at s (2-4), or 0 if it is not a valid one. */
static int utf8_length(const unsigned char *s)
{
    int n = s[0] >= 0xf0 && s[0] < 0xf5 ? 4 : s[0] >= 0xe0 && s[0] < 0xf0 ? 3 :
            s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

/* A JSON string body: quotes, backslashes and control characters escaped; UTF-8 kept, any
 * other byte (a path is bytes) shown as the code point of its value. */
static size_t json_escape(char *out, size_t size, const char *s)
{
    size_t o = 0;
    while (*s && o + 7 < size) {
        unsigned char c = (unsigned char)*s;
        int n = c >= 0x80 ? utf8_length((const unsigned char *)s) : 1;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || (c >= 0x80 && n == 0)) {
            o += (size_t)snprintf(out + o, size - o, "\\u%04x", c);
        } else if (o + (size_t)n < size - 1) {
            memcpy(out + o, s, (size_t)n);
            o += (size_t)n;
            s += n;
            continue;
        } else {
            break;
        }
        s++;
    }
    out[o] = 0;
    return o;
}

/* process.run_child's report of a failure: {"op":"error","message":...,"errno":E} on SOCK if
 * it is still open, else on stderr; returns the exit code: 127 (ENOENT), 126 (EACCES,
 * EPERM, ENOEXEC) or 1 (E 0: any failure of the set-up is zoned's or the config's). */
static int report_error(int sock, const char *text, int err)
{
    static char msg[8192 * 6 + 64], escaped[8192 * 6 + 1];
    int code = err == ENOENT ? 127 : (err == EACCES || err == EPERM || err == ENOEXEC) ? 126 : 1;
    ssize_t n;
    if (sock >= 0) {
        json_escape(escaped, sizeof(escaped), text);
        n = snprintf(msg, sizeof(msg), "{\"op\":\"error\",\"message\":\"%s\",\"errno\":%d}",
                     escaped, err);
        if (n > 0 && n < (ssize_t)sizeof(msg) &&
            send(sock, msg, (size_t)n, MSG_NOSIGNAL) == n)
            return code;
    }
    n = snprintf(msg, sizeof(msg), "zoned: container init: %s\n", text);
    if (n > 0 && write(2, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1) < 0) {
        /* nothing left to tell it with */
    }
    return code;
}

/* /proc/self/fd of the zone's own procfs, to open exec.fifo through later (after
 * pivot_root /proc is the rootfs's: with no procfs mounted, a file of its own there would
 * let the process run before `start`); -1 if it is not procfs. */
static int proc_fd_dir(void)
{
    struct statfs fs;
    int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dir >= 0 && (fstatfs(dir, &fs) < 0 || fs.f_type != PROC_SUPER_MAGIC)) {
        close(dir);
        dir = -1;
    }
    return dir;
}

/* exec.fifo opened for writing through its O_PATH fd, checked to be that very fifo. */
static int open_fifo(int dir, int fifo)
{
    struct stat want, got;
    char name[16];
    int fd;
    if (fstat(fifo, &want) < 0)
        return -1;
    snprintf(name, sizeof(name), "%d", fifo);
    fd = openat(dir, name, O_WRONLY | O_CLOEXEC);
    if (fd >= 0 && (fstat(fd, &got) < 0 || got.st_dev != want.st_dev ||
                    got.st_ino != want.st_ino)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One message of zoned's on SOCK and the fds it carries (at most MAX <= 32, CLOEXEC), as
 * a NUL-terminated text; -1 for an error or a message cut short (its fds closed: never
 * read half of one). */
static ssize_t recv_with_fds(int sock, char *buf, size_t size, int *fds, int max, int *nfds)
{
    char cbuf[CMSG_SPACE(sizeof(int) * 32)];
    struct iovec iov = {buf, size - 1};
    struct msghdr mh;
    struct cmsghdr *c;
    ssize_t n;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)max);
    n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == ECONNRESET)  /* see sync.Channel.recv */
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    *nfds = 0;
    for (c = CMSG_FIRSTHDR(&mh); n >= 0 && c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            if (count > max - *nfds)
                count = max - *nfds;
            memcpy(fds + *nfds, CMSG_DATA(c), sizeof(int) * (size_t)count);
            *nfds += count;
        }
    }
    if (n > 0 && (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        while (*nfds)
            close(fds[--*nfds]);
        return -1;
    }
    if (n >= 0)
        buf[n] = 0;
    return n;
}

/*
 * A container's init from "ready" to the start, keeping process._child's protocol:
 *   SOCK            the sync socket: sends {"op":"ready"}, then
 *   FIFO >= 0       (create/start) waits for {"op":"ack"}, drops pdeathsig unless
 *                   KEEP_PDEATHSIG, sends {"op":"detached"}, closes SOCK (*sock = -1) and
 *                   blocks opening exec.fifo (an O_PATH fd) for writing until `zoned start`
 *                   reads it;
 *   FIFO -1         (run) waits for {"op":"start"} (with one fd, into *start_fd, where
 *                   start_fd: a zone made ahead's process, as a plan), drops pdeathsig
 *                   unless KEEP_PDEATHSIG.
 * Returns 0 once started, else the exit code (a failure is reported: report_error).
 */
static int init_wait(int *sock, int fifo, int keep_pdeathsig, int *start_fd)
{
    static char msg[8192];
    int fd, fd_dir = -1, got, fds[4], nfds;
    ssize_t n;

    cloexec(*sock);
    cloexec(fifo);
    /* a change of capabilities (at this exec, or the init's set-up) may have cleared it;
     * EOF on SOCK covers a creator that died before */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        return 1;
    if (fifo >= 0 && (fd_dir = proc_fd_dir()) < 0)
        return report_error(*sock, "a created zone needs a procfs at /proc (its config "
                            "mounts none)", 0);
    if (send(*sock, "{\"op\":\"ready\"}", 14, MSG_NOSIGNAL) != 14)
        return 1;
    n = recv_with_fds(*sock, msg, sizeof(msg), fds, 4, &nfds);
    for (int i = start_fd ? 1 : 0; i < nfds; i++)
        close(fds[i]);  /* (start brings one fd at the most: a late plan's) */
    got = nfds > 0 && start_fd ? fds[0] : -1;
    if (!op_is(msg, n, fifo >= 0 ? "ack" : "start") || (start_fd && got < 0)) {
        if (got >= 0)
            close(got);
        return 1;
    }
    if (start_fd)
        *start_fd = got;
    if (!keep_pdeathsig)
        prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
    if (fifo >= 0) {
        if (send(*sock, "{\"op\":\"detached\"}", 17, MSG_NOSIGNAL) != 17)
            return 1;
        close(*sock);  /* from here the creator may exit */
        *sock = -1;
        fd = open_fifo(fd_dir, fifo);  /* blocks until `zoned start` */
        if (fd < 0 || write(fd, "0", 1) != 1)
            return 1;
        close(fd);
        close(fifo);
        close(fd_dir);
    }
    return 0;
}

/* Loads the filter BPF (none if empty; without no_new_privs the init loaded it before
 * dropping its capabilities) and execs PATH (already looked up in the container's PATH).
 * A failure is reported (report_error); EOF on SOCK (CLOEXEC here) tells zoned that execve
 * worked. Returns the exit code on failure. */
static int init_exec(int sock, unsigned int seccomp_flags, const unsigned char *bpf,
                     size_t bpf_len, const char *path, char *const argv[], char *const envp[])
{
    static char text[4096];
    int err;

    errno = 0;
    if (bpf_len == 0 || z_seccomp_set_filter(seccomp_flags, bpf, bpf_len) == 0)
        execve(path, argv, envp);
    err = errno;
    snprintf(text, sizeof(text), "%s: %s", strerror(err), path);
    return report_error(sock, text, err);
}

/*
 * zoned-spawn init SOCK FIFO_FD KEEP_PDEATHSIG SECCOMP_FLAGS BPF_FD PATH ARGV0 ARGS...
 * Run by a container's init set up in Python (zoned/child/initstub.py, exec_stub) once its
 * set-up is done, with the process's environment: init_wait and init_exec, the filter read
 * from BPF_FD (-1: none).
 */
static int init_main(int argc, char **argv)
{
    static unsigned char bpf[1 << 16];
    size_t bpf_len;
    int sock, code;

    if (argc < 9)
        return 2;
    sock = atoi(argv[2]);
    bpf_len = read_bpf(atoi(argv[6]), bpf, sizeof(bpf));
    if ((code = init_wait(&sock, atoi(argv[3]), atoi(argv[4]), NULL)) != 0)
        return code;
    return init_exec(sock, (unsigned int)strtoul(argv[5], NULL, 10), bpf, bpf_len, argv[7],
                     argv + 8, environ);
}

#include "setupplan.c"
