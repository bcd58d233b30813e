/*
 * zoned-logger: writes a detached zone's output to its log, rotating it by size.
 *
 * Usage: zoned-logger DIR MAXBYTES    (stdin: the read end of the zone's stdout pipe)
 *        zoned-logger DIR MAXBYTES ERRDIR  (fd 3: the read end of its stderr pipe)
 *        zoned-logger -p INIT STATEDIR DIR MAXBYTES
 *        zoned-logger -P INIT STATEDIR DIR MAXBYTES  (stdin: a pty master; fd 3: a socket)
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
 * With ERRDIR (the API's containers, whose harness tells the streams apart) the
 * zone's stderr is a second pipe, logged to ERRDIR/ctr.log by this same process.
 * Whenever both pipes have data, stdout's is drained first: a zone that wrote a
 * line to stdout before one to stderr has it in its log before the stderr one
 * (two loggers, one per stream, raced, and a reader that had seen the stderr
 * line could miss the stdout one).
 *
 * If DIR disappears (the zone was removed while output was still in the pipe)
 * it keeps reading and drops the data until EOF, so writers never block.
 *
 * With -p (the parent: `zoned run -d`), no fork: the process that exec'd this is the
 * zone init's parent (zoned.cli.detach forks a worker that creates and starts the zone,
 * then becomes its logger), so the logger reaps INIT and writes its status as a shell
 * reports it (code, or 128+signal), the time and INIT to STATEDIR/exit ("CODE EPOCH PID\n",
 * atomically, as zoned-monitor does): `zoned wait`, ps and inspect read it. Only a
 * parent learns an exit status; this way no process is added per zone for it. It exits
 * once the pipe is at EOF and INIT is reaped.
 *
 * With -P (`zoned run -dt`, `run -it`), stdin is the zone's pty master and fd 3 a
 * listening unix socket (STATEDIR/attach.sock) for `zoned attach`: what the zone writes
 * to its terminal goes to the log and to the one client connected (a new one replaces
 * it). On connecting, a client is sent a copy of the master (SCM_RIGHTS, with one byte):
 * it writes its input and sets the window size there itself, so this loop only relays
 * output. At EIO (no slave left open) the client is closed: it has had everything.
 * A socket at fd 4 is a client already connected (`run -it` attaches before the start).
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
#include <poll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "scm.h"

#define LOG_NAME "ctr.log"
#define OLD_NAME "ctr.log.1"
#define TS_NAME "ctr.ts"
#define OLD_TS_NAME "ctr.ts.1"
#define BUF_SIZE 65536

/* One log: a directory with ctr.log (and ctr.ts), and how far it has got. */
struct sink {
	int dirfd, logfd, tsfd, stamped, broken;
	long long size;
};

static struct sink out = { -1, -1, -1, 0, 0, 0 }, err = { -1, -1, -1, 0, 0, 0 };
static long long max_size, now_ns;

static int open_log(struct sink *s)
{
	struct stat st;

	s->logfd = openat(s->dirfd, LOG_NAME, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (s->logfd < 0)
		return -1;
	s->size = fstat(s->logfd, &st) == 0 ? st.st_size : 0;
	s->tsfd = openat(s->dirfd, TS_NAME, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	s->stamped = 0;
	return 0;
}

static int rotate(struct sink *s)
{
	if (s->logfd >= 0)
		close(s->logfd);
	if (s->tsfd >= 0)
		close(s->tsfd);
	s->logfd = s->tsfd = -1;
	if (renameat(s->dirfd, LOG_NAME, s->dirfd, OLD_NAME) < 0 && errno != ENOENT)
		return -1;
	renameat(s->dirfd, TS_NAME, s->dirfd, OLD_TS_NAME);
	return open_log(s);
}

/* The times: ctr.ts beside ctr.log holds one record per read() from the pipe that went
 * into that file, 16 bytes little-endian: the log offset where its bytes begin, and when
 * they were read (ns since the epoch). A line's time is that of the record its first
 * byte falls under (as conmon stamps lines when it reads them); `zoned logs --since/-t`
 * reads them (zoned.logtimes). Best effort: a full disk loses times, not output. */
static void stamp(struct sink *s)
{
	unsigned char rec[16];
	unsigned long long off = (unsigned long long)s->size, ns = (unsigned long long)now_ns;

	if (s->stamped || s->tsfd < 0)
		return;
	for (int i = 0; i < 8; i++) {
		rec[i] = (unsigned char)(off >> (8 * i));
		rec[8 + i] = (unsigned char)(ns >> (8 * i));
	}
	if (write(s->tsfd, rec, sizeof(rec)) == (ssize_t)sizeof(rec))
		s->stamped = 1;
}

static int write_all(struct sink *s, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(s->logfd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
		s->size += w;
	}
	return 0;
}

/* Append n bytes, rotating first whenever they would not fit. */
static int put(struct sink *s, const char *p, size_t n)
{
	while (n > 0) {
		size_t room = s->size < max_size ? (size_t)(max_size - s->size) : 0;
		size_t take = n;

		if (n > room) {
			const char *nl = room ? memrchr(p, '\n', room) : NULL;
			if (nl)
				take = (size_t)(nl - p) + 1;	/* whole lines that fit */
			else if (s->size == 0)
				take = room ? room : n;		/* one line longer than the limit */
			else
				take = 0;			/* nothing fits: a new file */
		}
		if (take)
			stamp(s);
		if (take && write_all(s, p, take) < 0)
			return -1;
		p += take;
		n -= take;
		if (n > 0 && rotate(s) < 0)
			return -1;
	}
	return 0;
}

/* n bytes just read: to the log, stamped now; a sink whose DIR is gone or full stops
 * writing (the caller drains its pipe until EOF). */
static void log_read(struct sink *s, const char *p, size_t n)
{
	struct timespec ts;

	if (s->broken)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	now_ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
	s->stamped = 0;
	if (put(s, p, n) < 0)
		s->broken = 1;
}

/* ERRDIR: both pipes until both are at EOF; whatever stdout holds is logged before
 * stderr's (see the top). The read ends are non-blocking, so draining stops at empty. */
static int log_two(char *buf)
{
	int open_fds = 2, fds[2] = { 0, 3 };
	struct sink *sinks[2] = { &out, &err };

	fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
	fcntl(3, F_SETFL, fcntl(3, F_GETFL) | O_NONBLOCK);
	while (open_fds > 0) {
		struct pollfd p[2] = { { fds[0], POLLIN, 0 }, { fds[1], POLLIN, 0 } };

		if (poll(p, 2, -1) < 0)
			continue;
		for (int i = 0; i < 2; i++) {
			/* bounded, so a zone flooding stdout cannot starve its stderr */
			for (int round = 0; fds[i] >= 0 && round < 64; round++) {
				ssize_t n = read(fds[i], buf, BUF_SIZE);

				if (n > 0) {
					log_read(sinks[i], buf, (size_t)n);
					continue;
				}
				if (n < 0 && errno == EINTR)
					continue;
				if (n == 0 || errno != EAGAIN) {	/* EOF: no writer left */
					close(fds[i]);
					fds[i] = -1;
					open_fds--;
				}
				break;
			}
		}
	}
	return 0;
}

static pid_t init_pid;
static int exitdirfd = -1, init_done, listenfd = -1, client = -1;

/* -P: a new attach client gets the pty master (fd 0) and replaces the old one. */
static void accept_client(void)
{
	char one = 0, cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &one, 1 };
	struct msghdr mh = { 0 };
	int fd = accept4(listenfd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	attach_fd(&mh, cbuf, sizeof(cbuf), 0);	/* the master */
	if (sendmsg(fd, &mh, MSG_NOSIGNAL) != 1) {
		close(fd);
		return;
	}
	if (client >= 0)
		close(client);
	client = fd;
}

/* -P: the zone's output to the attached client too; a client that went away is dropped. */
static void to_client(const char *p, size_t n)
{
	while (client >= 0 && n > 0) {
		ssize_t w = send(client, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			close(client);
			client = -1;
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

/* The init's status as a shell reports it, and when: STATEDIR/exit, written atomically. */
static void write_exit(int st)
{
	struct timespec ts;
	char text[64];
	int code = WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st), fd, n;

	clock_gettime(CLOCK_REALTIME, &ts);
	n = snprintf(text, sizeof(text), "%d %lld.%06ld %d\n", code, (long long)ts.tv_sec,
		     ts.tv_nsec / 1000, (int)init_pid);
	fd = openat(exitdirfd, "exit.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;	/* the zone was removed meanwhile */
	if (write(fd, text, (size_t)n) == n)
		renameat(exitdirfd, "exit.tmp", exitdirfd, "exit");
	close(fd);
}

/* Reap every child that has exited (the init; nothing else should be ours). */
static void reap(void)
{
	int st;
	pid_t p;

	while ((p = waitpid(-1, &st, WNOHANG)) != 0) {
		if (p < 0) {
			if (errno == EINTR)
				continue;
			init_done = 1;	/* ECHILD: nobody left to wait for */
			return;
		}
		if (p == init_pid) {
			write_exit(st);
			init_done = 1;
		}
	}
}

int main(int argc, char **argv)
{
	static char buf[BUF_SIZE];
	int sigfd = -1, eof = 0, two = 0;
	const char *statedir = NULL;
	pid_t pid;

	if (argc == 6 && (strcmp(argv[1], "-p") == 0 || strcmp(argv[1], "-P") == 0)) {
		if (argv[1][1] == 'P')
			listenfd = 3;
		init_pid = (pid_t)atol(argv[2]);
		statedir = argv[3];
		argv += 3;
		argc -= 3;
	}
	if (argc == 4 && !statedir)
		two = 1;	/* DIR MAXBYTES ERRDIR, fd 3 the stderr pipe */
	else if (argc != 3) {
		fprintf(stderr, "usage: zoned-logger [-p INIT STATEDIR] DIR MAXBYTES [ERRDIR]\n");
		return 2;
	}
	/* fds leaked by zoned's caller must not be held open here */
	{
		int keep = listenfd == 3 ? 5 : two ? 4 : 3;

		if (syscall(SYS_close_range, (unsigned)keep, ~0U, 0U) < 0)
			for (int fd = keep; fd < 1024; fd++)
				close(fd);
	}
	if (listenfd == 3) {
		struct stat cst;

		fcntl(3, F_SETFD, FD_CLOEXEC);
		if (fstat(4, &cst) == 0 && S_ISSOCK(cst.st_mode)) {
			client = 4;	/* `run -it`: attached before the zone started */
			fcntl(4, F_SETFD, FD_CLOEXEC);
		}
	}
	if (statedir) {
		exitdirfd = open(statedir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (init_pid <= 0 || exitdirfd < 0) {
			fprintf(stderr, "zoned-logger: -p %s %s: bad init or state dir\n",
				argv[-1], statedir);
			return 2;
		}
	}
	max_size = atoll(argv[2]);
	if (max_size < 1)
		max_size = 1;
	for (int i = 0; i < 1 + two; i++) {
		struct sink *s = i ? &err : &out;
		const char *dir = i ? argv[3] : argv[1];

		s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (s->dirfd < 0 || open_log(s) < 0) {
			fprintf(stderr, "zoned-logger: %s: %s\n", dir, strerror(errno));
			return 1;
		}
	}
	if (init_pid <= 0) {
		pid = fork();
		if (pid < 0) {
			perror("zoned-logger: fork");
			return 1;
		}
		if (pid > 0) {
			printf("%d\n", (int)pid);
			return fflush(stdout) == 0 ? 0 : 1;
		}
	} else {
		sigset_t mask;

		sigemptyset(&mask);
		sigaddset(&mask, SIGCHLD);
		sigprocmask(SIG_BLOCK, &mask, NULL);
		sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
		reap();	/* an init that exited before the exec sent its SIGCHLD to nobody */
	}
	setsid();
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	/* stdout and stderr to /dev/null, opened straight onto fd 1 (the lowest free one once
	   1 is closed: 0 is the pipe), so no other descriptor exists even for a moment: a
	   look at /proc/PID/fd just after the pid was printed sees only what the logger keeps */
	close(1);
	if (open("/dev/null", O_RDWR) == 1)
		dup2(1, 2);
	if (two)
		return log_two(buf);
	for (;;) {
		ssize_t n;

		if (sigfd >= 0) {	/* -p: the pipe and the init's SIGCHLD (-P: clients) */
			struct pollfd p[4] = { { sigfd, POLLIN, 0 }, { 0, POLLIN, 0 },
					       { listenfd, POLLIN, 0 }, { client, POLLIN, 0 } };

			if (eof && init_done)
				return 0;
			if (eof)
				p[1].fd = p[2].fd = -1;	/* poll() skips negative fds */
			if (poll(p, 4, -1) < 0)
				continue;
			if (p[0].revents) {
				struct signalfd_siginfo si;

				while (read(sigfd, &si, sizeof(si)) == sizeof(si))
					;
				reap();
			}
			if (p[2].fd >= 0 && p[2].revents)
				accept_client();
			if (p[3].fd >= 0 && p[3].fd == client && p[3].revents) {
				char junk[256];	/* clients write to the master, not here */
				if (recv(client, junk, sizeof(junk), MSG_DONTWAIT) == 0 ||
				    (p[3].revents & (POLLHUP | POLLERR))) {
					close(client);
					client = -1;
				}
			}
			if (eof || !p[1].revents)
				continue;
		}
		n = read(0, buf, sizeof(buf));
		if (n == 0 || (n < 0 && errno == EIO)) {	/* EIO: the pty has no slave left */
			if (sigfd < 0)
				return 0;
			eof = 1;
			if (client >= 0)
				close(client), client = -1;
			if (listenfd >= 0) {
				close(listenfd), listenfd = -1;
				unlinkat(exitdirfd, "attach.sock", 0);
			}
			continue;
		}
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return 1;
		}
		to_client(buf, (size_t)n);
		log_read(&out, buf, (size_t)n);	/* DIR gone or full: drained until EOF */
	}
}
