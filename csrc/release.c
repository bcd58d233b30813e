/*
 * zoned-release: drops the last reference to inodes that zoned removed (zoned.linux.lastref).
 *
 * Usage: zoned-release FD...   (ascending; O_PATH fds the caller passed down)
 *
 * On a file system mounted with `discard`, the process that drops a removed inode's last
 * reference frees its blocks and waits for the device's trim of them. An API operation
 * of zoned's keeps an O_PATH fd on what it removes and hands those fds to this program
 * when it ends: it closes every other fd it inherited (a pipe of the caller's must not
 * stay open through it), forks, and exits. The caller reaps it at once; its child exits
 * too, and drops the fds (and waits for the trims) as a process of its own, re-parented
 * to the nearest subreaper or init like any orphan. Static and tiny: one runs per
 * removal of the API's.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    unsigned int from = 0;
    for (int i = 1; i < argc; i++) {
        char *end;
        long fd = strtol(argv[i], &end, 10);
        if (*end || fd < 0 || fd > 0x7fffffff || (unsigned int)fd < from)
            continue;  /* not a number, or not ascending: closed with the rest */
        int flags = fcntl((int)fd, F_GETFL);
        if (flags < 0 || !(flags & O_PATH))
            continue;  /* only O_PATH fds are held here */
        if ((unsigned int)fd > from)
            syscall(SYS_close_range, from, (unsigned int)fd - 1, 0U);
        from = (unsigned int)fd + 1;
    }
    syscall(SYS_close_range, from, ~0U, 0U);
    _exit(fork() < 0);  /* the child's exit, or ours if it could not fork, drops them */
}
