/*
 * zoned-logger: writes a detached zone's output to its log, rotating it by size.
 *
 * Usage: zoned-logger DIR MAXBYTES    (stdin: the read end of the zone's stdout pipe)
 *
 * Why a process of its own: a zone that wrote its log itself (through an fd on
 * ctr.log) had the log's page cache, and on a tmpfs the log itself, charged to
 * its own memory cgroup, and nothing could rotate the file under it. This
 * writer runs outside the zone's cgroup (in the cgroup of the zoned that made
 * it), reads the pipe and appends to DIR/ctr.log; when the next write would
 * take ctr.log past MAXBYTES it renames ctr.log to ctr.log.1 (replacing the
 * older one) and starts a new ctr.log, so the log never takes more than about
 * 2 * MAXBYTES. A cut falls after the last newline that fits, when there is
 * one. It exits at EOF, when the zone's last writer has gone.
 *
 * It daemonizes itself: the first process forks, writes the writer's pid to
 * stdout (a pipe zoned reads) and exits, so the writer is nobody's zombie and
 * outlives the `zoned run -d` that started it. The writer is a session leader
 * with only fds 0-2 open (whatever zoned's caller leaked is closed).
 *
 * If DIR disappears (the zone was removed while output was still in the pipe)
 * it keeps reading and drops the data until EOF, so writers never block.
 * This is where a per-zone monitor (exit codes, restart policies) can grow.
 *
 * Static, like zoned-init: cc -static -Os -s -Wall -o zoned/libexec/zoned-logger csrc/logger.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define LOG_NAME "ctr.log"
#define OLD_NAME "ctr.log.1"
#define BUF_SIZE 65536

static int dirfd_ = -1, logfd = -1;
static long long size, max_size;

static int open_log(void)
{
	struct stat st;

	logfd = openat(dirfd_, LOG_NAME, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (logfd < 0)
		return -1;
	size = fstat(logfd, &st) == 0 ? st.st_size : 0;
	return 0;
}

static int rotate(void)
{
	if (logfd >= 0)
		close(logfd);
	logfd = -1;
	if (renameat(dirfd_, LOG_NAME, dirfd_, OLD_NAME) < 0 && errno != ENOENT)
		return -1;
	return open_log();
}

static int write_all(const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(logfd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
		size += w;
	}
	return 0;
}

/* Append n bytes, rotating first whenever they would not fit. */
static int put(const char *p, size_t n)
{
	while (n > 0) {
		size_t room = size < max_size ? (size_t)(max_size - size) : 0;
		size_t take = n;

		if (n > room) {
			const char *nl = room ? memrchr(p, '\n', room) : NULL;
			if (nl)
				take = (size_t)(nl - p) + 1;	/* whole lines that fit */
			else if (size == 0)
				take = room ? room : n;		/* one line longer than the limit */
			else
				take = 0;			/* nothing fits: a new file */
		}
		if (take && write_all(p, take) < 0)
			return -1;
		p += take;
		n -= take;
		if (n > 0 && rotate() < 0)
			return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static char buf[BUF_SIZE];
	int broken = 0;
	pid_t pid;

	if (argc != 3) {
		fprintf(stderr, "usage: zoned-logger DIR MAXBYTES\n");
		return 2;
	}
	/* fds leaked by zoned's caller must not be held open here */
	if (syscall(SYS_close_range, 3U, ~0U, 0U) < 0)
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
	max_size = atoll(argv[2]);
	if (max_size < 1)
		max_size = 1;
	dirfd_ = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd_ < 0 || open_log() < 0) {
		fprintf(stderr, "zoned-logger: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		perror("zoned-logger: fork");
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
	{
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, 1);
			dup2(null, 2);
			if (null > 2)
				close(null);
		}
	}
	for (;;) {
		ssize_t n = read(0, buf, sizeof(buf));
		if (n == 0)
			return 0;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		if (!broken && put(buf, (size_t)n) < 0)
			broken = 1;	/* DIR is gone or full: drain until EOF */
	}
}
