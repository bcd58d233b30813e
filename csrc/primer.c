/*
 * The cgroup-move primer's loop (zoned/cgroups/prime.py says why it exists): a no-op move of
 * this process into the cgroup it is in, then one every few ms until told to stop. In C so
 * that its thread runs without the GIL: cffi releases it for the call, and the loop needs no
 * Python. A Python loop took the GIL back for every wake-up and every os.* call, and the
 * main thread, busy importing and setting up, lost ~2 ms of each start to that contention.
 * Only syscalls here, no lock and no malloc: a fork while it runs leaves the child nothing
 * held (the child has no such thread and never calls back into this).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long primer_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int primer_move(const char *procs, const char *pid, size_t len)
{
    int fd = open(procs, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, pid, len);
    int err = n < 0 ? -errno : 0;
    close(fd);
    return err;
}

int z_primer_loop(const char *procs, int every_ms, int for_ms, int stop_fd)
{
    char pid[24];
    int len = snprintf(pid, sizeof pid, "%d", (int)getpid());
    int err = primer_move(procs, pid, (size_t)len);  /* this one waits for the grace period */
    if (err)
        return err;
    long long deadline = primer_now_ms() + for_ms;
    struct pollfd stop = {.fd = stop_fd, .events = POLLIN};
    for (;;) {
        int n = poll(&stop, 1, every_ms);
        if (n > 0 || (n < 0 && errno != EINTR))
            return 0;  /* told to stop (or the pipe went wrong: stop as well) */
        if (primer_now_ms() > deadline)
            return 0;  /* nobody joined us: the caller failed before its fork */
        err = primer_move(procs, pid, (size_t)len);
        if (err)
            return err;
    }
}
