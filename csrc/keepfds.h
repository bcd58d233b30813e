/*
 * Close every fd but the O_PATH ones named (zoned.linux.lastref): what the CLI's exit holder
 * (exitlend.c) and zoned-release (release.c) keep. An O_PATH fd holds an inode and nothing
 * else: no lock, no pipe end, no device open, so nobody waits on the process that keeps
 * it. keep[] is ascending; an fd out of order, negative or not O_PATH is closed with the
 * rest. Raw syscalls only (the holder runs on a static stack in another's memory).
 */
#ifndef ZONED_KEEPFDS_H
#define ZONED_KEEPFDS_H

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

static void z_close_all_but_o_path(const int *keep, int nkeep)
{
    unsigned int from = 0;
    for (int i = 0; i < nkeep; i++) {
        if (keep[i] < 0 || (unsigned int)keep[i] < from)
            continue;
        long flags = syscall(SYS_fcntl, keep[i], F_GETFL);
        if (flags < 0 || !(flags & O_PATH))
            continue;
        if ((unsigned int)keep[i] > from)
            syscall(SYS_close_range, from, (unsigned int)keep[i] - 1, 0U);
        from = (unsigned int)keep[i] + 1;
    }
    syscall(SYS_close_range, from, ~0U, 0U);
}

#endif
