/*
 * zoned-vmlog: writes a VM's serial console and ctl port to its directory, bounded.
 *
 *   zoned-vmlog VMDIR CONSOLE_MAX CTL_MAX   (stdin: the console pipe's read end; fd 3: the
 *                                            ctl pipe's; stdout: a pipe zoned reads the
 *                                            writer's pid from)
 *
 * Why: QEMU's file chardevs append without end, and everything on them is the guest's
 * to write. A guest (root in it can write ttyS0; one that takes over its ctl port can
 * write that) could fill the host's disk, or its memory where the state root is a
 * tmpfs. This is libvirt's virtlogd for the same reason: QEMU writes into pipes, and
 * this process keeps
 *   - console.log under CONSOLE_MAX, renaming it to console.log.1 when the next read
 *     would not fit (so at most 2 * CONSOLE_MAX), as zoned-logger does a zone's log;
 *   - ctl under CTL_MAX: when the next read would not fit, the file is cut back to its
 *     first lines (up to 4 KiB: where "ready" is) and the read appended, its last
 *     bytes only if it alone is too large (where "exit N" is). zoned.vm.machine.read_ctl
 *     reads those two ends.
 *
 * It holds an exclusive flock on ctl from before the pid is printed until both pipes
 * are at EOF (QEMU, their last writer, has exited) and everything is written: a reader
 * that finds QEMU gone takes a shared lock to know the guest's last line is in the file.
 *
 * It daemonizes like zoned-logger (the first process prints the writer's pid and exits),
 * so it is nobody's zombie, and runs in the cgroup of the zoned that started it, not the
 * VM's. It exits at EOF; if VMDIR is removed meanwhile it keeps draining, writing nothing.
 *
 * Static, like the other helpers: musl-gcc -static -Os -s -Wall -o zoned/libexec/zoned-vmlog
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BUF_SIZE 65536
#define CTL_HEAD 4096

static int dirfd_ = -1, con_fd = -1, ctl_fd = -1, con_broken, ctl_broken;
static long long con_size, ctl_size, ctl_head = -1, con_max, ctl_max;

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void console_put(const char *p, size_t n)
{
	if (con_broken)
		return;
	if (con_size > 0 && con_size + (long long)n > con_max) {
		close(con_fd);
		con_fd = -1;
		if (renameat(dirfd_, "console.log", dirfd_, "console.log.1") < 0 ||
		    /* O_EXCL, O_NONBLOCK: what the VM's QEMU (which can write this dir) put
		     * here since the rename, a symlink or a FIFO, is not written to */
		    (con_fd = openat(dirfd_, "console.log", O_WRONLY | O_CREAT | O_EXCL |
				     O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600)) < 0) {
			con_broken = 1;
			return;
		}
		con_size = 0;
	}
	if ((long long)n > con_max) {	/* one read larger than a file: its end */
		p += n - (size_t)con_max;
		n = (size_t)con_max;
	}
	if (write_all(con_fd, p, n) < 0)
		con_broken = 1;
	else
		con_size += (long long)n;
}

/* The length of ctl's first whole lines within CTL_HEAD bytes (0 if there is none). */
static long long head_length(void)
{
	char head[CTL_HEAD];
	ssize_t n = pread(ctl_fd, head, sizeof(head), 0);
	char *nl = n > 0 ? memrchr(head, '\n', (size_t)n) : NULL;

	return nl ? (long long)(nl - head) + 1 : 0;
}

static void ctl_put(const char *p, size_t n)
{
	if (ctl_broken)
		return;
	if (ctl_size + (long long)n > ctl_max) {
		if (ctl_head < 0)
			ctl_head = head_length();
		if (ftruncate(ctl_fd, ctl_head) < 0) {
			ctl_broken = 1;
			return;
		}
		ctl_size = ctl_head;
		if (ctl_size + (long long)n > ctl_max) {
			size_t room = (size_t)(ctl_max - ctl_size);

			p += n - room;
			n = room;
		}
	}
	if (write_all(ctl_fd, p, n) < 0)
		ctl_broken = 1;
	else
		ctl_size += (long long)n;
}

int main(int argc, char **argv)
{
	static char buf[BUF_SIZE];
	int fds[2] = { 0, 3 }, open_fds = 2;
	pid_t pid;

	if (argc != 4) {
		fprintf(stderr, "usage: zoned-vmlog VMDIR CONSOLE_MAX CTL_MAX\n");
		return 2;
	}
	con_max = atoll(argv[2]);
	ctl_max = atoll(argv[3]);
	if (con_max < 1)
		con_max = 1;
	if (ctl_max < 2 * CTL_HEAD)
		ctl_max = 2 * CTL_HEAD;
	/* fds leaked by zoned's caller must not be held open here (a pipe's write end
	   would keep this process from its EOF) */
	if (syscall(SYS_close_range, 4U, ~0U, 0U) < 0)
		for (int fd = 4; fd < 1024; fd++)
			close(fd);
	dirfd_ = open(argv[1], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dirfd_ >= 0) {
		con_fd = openat(dirfd_, "console.log", O_WRONLY | O_CREAT | O_TRUNC | O_APPEND |
				O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
		ctl_fd = openat(dirfd_, "ctl", O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_NOFOLLOW |
				O_NONBLOCK | O_CLOEXEC, 0600);
	}
	if (dirfd_ < 0 || con_fd < 0 || ctl_fd < 0 || flock(ctl_fd, LOCK_EX) < 0) {
		fprintf(stderr, "zoned-vmlog: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	pid = fork();	/* the lock is the open file's: the writer keeps it */
	if (pid < 0) {
		perror("zoned-vmlog: fork");
		return 1;
	}
	if (pid > 0) {
		printf("%d\n", (int)pid);
		return fflush(stdout) == 0 ? 0 : 1;
	}
	setsid();
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	close(1);
	if (open("/dev/null", O_RDWR | O_CLOEXEC) == 1)
		dup2(1, 2);
	while (open_fds > 0) {
		struct pollfd p[2] = { { fds[0], POLLIN, 0 }, { fds[1], POLLIN, 0 } };

		if (poll(p, 2, -1) < 0)
			continue;
		for (int i = 0; i < 2; i++) {
			ssize_t n;

			if (fds[i] < 0 || !p[i].revents)
				continue;
			n = read(fds[i], buf, sizeof(buf));
			if (n > 0) {
				(i ? ctl_put : console_put)(buf, (size_t)n);
			} else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
				close(fds[i]);	/* EOF: QEMU, the last writer, is gone */
				fds[i] = -1;
				open_fds--;
			}
		}
	}
	return 0;	/* the lock goes with the last fd on ctl */
}
