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
 * Usage: zoned-spawn SOCK PDEATHSIG PARENT_PIDFD TTY SECCOMP_FLAGS BPF_FD PATH ARGV0 ARGS...
 *   SOCK          zoned's sync socket: gets {"op":"made","pid":N}, answers when the process
 *                 is in the container's cgroup, then gets {"op":"spawned","pid":N,
 *                 "errno":E,"step":S} once it has exec'd (errno 0) or failed
 *   BPF_FD        a pipe holding the seccomp filter to load last (-1: none)
 * The environment is the process's. Built static (Makefile): cc -static -Os -s -Icsrc
 * -o zoned/libexec/zoned-spawn csrc/spawn.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "zoned.h"
#include "zoned.c"  /* z_spawn_exec, z_seccomp_set_filter */

extern char **environ;

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
    char msg[128], go = 'g';
    int pid, n;

    if (argc < 9)
        return 2;
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);  /* before anything: exec made it dumpable */
    sock = atoi(argv[1]);
    pdeathsig = atoi(argv[2]);
    parent_pidfd = atoi(argv[3]);
    tty = atoi(argv[4]);
    seccomp_flags = (unsigned int)strtoul(argv[5], NULL, 10);
    bpf_fd = atoi(argv[6]);
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
    pid = z_spawn_exec(argv[7], argv + 8, environ, bpf, bpf_len, seccomp_flags, pdeathsig,
                       parent_pidfd, tty, go_pipe[0], err_pipe[1]);
    close(go_pipe[0]);
    close(err_pipe[1]);
    if (pid > 0) {
        n = snprintf(msg, sizeof(msg), "{\"op\":\"made\",\"pid\":%d}", pid);
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
    n = snprintf(msg, sizeof(msg), "{\"op\":\"spawned\",\"pid\":%d,\"errno\":%d,\"step\":%d}",
                 pid, report[0], report[1]);
    return send(sock, msg, (size_t)n, 0) == n ? 0 : 1;
}
