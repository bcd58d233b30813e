/*
 * zoned-release: drops the last reference to inodes that zoned removed (zoned.linux.lastref).
 *
 * Usage: zoned-release FD...   (ascending; O_PATH fds the caller passed down)
 *
 * On a file system mounted with `discard`, the process that drops a removed inode's last
 * reference frees its blocks and waits for the device's trim of them. A CLI command of
 * zoned's without a holder of its exit (csrc/exitlend.c) keeps an O_PATH fd on what it
 * removes and hands those fds to this program when it ends (an API operation hands them
 * to a thread of its own: zoned.linux.lastref): it closes every other fd it inherited (a pipe of the caller's must not
 * stay open through it), forks, and exits. The caller reaps it at once; its child exits
 * too, and drops the fds (and waits for the trims) as a process of its own, re-parented
 * to the nearest subreaper or init like any orphan. Static and tiny.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <unistd.h>

#include "keepfds.h"

int main(int argc, char **argv)
{
    int keep[argc > 1 ? argc - 1 : 1];
    for (int i = 1; i < argc; i++) {
        char *end;
        long fd = strtol(argv[i], &end, 10);
        keep[i - 1] = (*end || fd < 0 || fd > 0x7fffffff) ? -1 : (int)fd;  /* -1: closed */
    }
    z_close_all_but_o_path(keep, argc - 1);
    _exit(fork() < 0);  /* the child's exit, or ours if it could not fork, drops them */
}
