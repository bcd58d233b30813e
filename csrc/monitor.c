/*
 * zoned-monitor: the parent of one detached zone's init, as conmon is of a podman
 * container's. One runs per zone started from a zone file (zoned.zones).
 *
 * Usage: zoned-monitor DIR NOTIFY_FD BOOT_ARGV... -- HOOK_ARGV...
 *
 * Why a process of its own, and why this one is C: only a process's parent (or the
 * nearest child subreaper above it) learns its exit status, and the `zoned start` that
 * makes a zone exits at once. This monitor is a child subreaper: it forks BOOT_ARGV (a
 * `zoned zone-boot NAME`), which creates and starts the zone and exits, so the zone's
 * init is re-parented here. A static C loop idles in poll() on a few fds; a Python
 * process per zone would cost ~10 MiB each.
 *
 * The boot worker reports on fd 3 (a SOCK_SEQPACKET socket; $ZONED_MONITOR_FD names it)
 * one message: "ok PID" (with the pty master as SCM_RIGHTS when the zone has a
 * terminal) or "err CODE MESSAGE". The first report is copied to NOTIFY_FD, which
 * `zoned start` reads, then NOTIFY_FD is closed.
 *
 * While the zone runs: a pty master is drained into DIR/console.log (capped at 256 KiB:
 * truncated when full) and relayed to the one client connected to DIR/console.sock
 * (`zoned console`; a new client replaces the old one). When the init exits, its
 * status as a shell reports it (code, or 128+signal) and the time go to DIR/exit
 * ("CODE EPOCH\n", written atomically), then HOOK_ARGV is run with the code appended
 * (`zoned zone-exited NAME CODE`): it records the exit and applies the zone's policy.
 * Exit status 10 of the hook means "boot it again" (a restart: back-off is the hook's
 * sleep); anything else ends the monitor. Other children (the zone's log writer,
 * re-parented here too) are reaped and ignored.
 *
 * Two processes, so that a SIGKILLed monitor loses no exit code: before each boot the
 * process splits into a keeper (parent, also a subreaper, idle) and the monitor (child).
 * The monitor tells the keeper each init's pid (and passes it a copy of the pty master).
 * If the monitor dies, the init is re-parented to the keeper, which takes over (and
 * splits again at the zone's next boot). Both hold DIR/monitor.lock: `zoned` sees a
 * monitor as alive while it cannot lock that file.
 *
 * Static: cc -static -Os -s -Wall -o zoned/libexec/zoned-monitor csrc/monitor.c
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
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "scm.h"

#define CONSOLE_MAX (256 * 1024)
#define RESTART_STATUS 10

static int dirfd_ = -1, sigfd = -1, listenfd = -1, client = -1, master = -1, logfd = -1;
static long long logsize;

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

static void console_out(const char *p, size_t n)
{
	if (logfd < 0)
		logfd = openat(dirfd_, "console.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
			       0640);
	if (logfd >= 0) {
		if (logsize + (long long)n > CONSOLE_MAX) {
			if (ftruncate(logfd, 0) == 0)
				logsize = 0;
		}
		write_all(logfd, p, n);
		logsize += (long long)n;
	}
	if (client >= 0)
		write_all(client, p, n);
}

static int status_code(int st)
{
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return WEXITSTATUS(st);
}

static void write_exit(int code)
{
	char buf[64];
	int n = snprintf(buf, sizeof(buf), "%d %lld\n", code, (long long)time(NULL));
	int fd = openat(dirfd_, "exit.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		return;
	write_all(fd, buf, (size_t)n);
	close(fd);
	renameat(dirfd_, "exit.tmp", dirfd_, "exit");
}

/* The zone's init, once known: reaping another child (the boot worker) may reap it too
 * (a zone that exits at once), so its status is kept here rather than dropped. */
static pid_t watched;
static int watched_status, watched_done;

/* Reap every child that has exited; return 1 (and its status) if `want` was one. */
static int reap(pid_t want, int *status)
{
	int st, found = 0;
	pid_t p;

	while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
		if (p == watched && watched > 0) {
			watched_status = st;
			watched_done = 1;
		}
		if (p == want) {
			*status = st;
			found = 1;
		}
	}
	if (!found && want == watched && watched > 0 && watched_done) {
		*status = watched_status;
		found = 1;
	}
	return found;
}

static void drain_signals(void)
{
	struct signalfd_siginfo si;

	while (read(sigfd, &si, sizeof(si)) == sizeof(si))
		;
}

static pid_t spawn(char **argv, int ctl, sigset_t *old)
{
	pid_t pid = fork();

	if (pid == 0) {
		sigprocmask(SIG_SETMASK, old, NULL);
		if (ctl >= 0) {
			if (dup2(ctl, 3) < 0)
				_exit(127);
			setenv("ZONED_MONITOR_FD", "3", 1);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	return pid;
}

/* The boot worker's report: 1 with *init (and maybe master) set, or 0 with msg. */
static int receive_report(int sock, pid_t *init, char *msg, size_t msglen)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { msg, msglen - 1 };
	struct msghdr mh = { 0 };
	ssize_t n;

	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof(cbuf);
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n <= 0) {
		snprintf(msg, msglen, "err 125 the boot worker exited without a report");
		return 0;
	}
	msg[n] = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(&master, CMSG_DATA(c), sizeof(int));
	if (strncmp(msg, "ok ", 3) != 0)
		return 0;
	*init = (pid_t)atol(msg + 3);
	return *init > 0;
}

static void open_console_socket(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	/* through /proc: the state dir's path may be longer than sun_path */
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/console.sock", dirfd_);
	unlinkat(dirfd_, "console.sock", 0);
	listenfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (listenfd < 0)
		return;
	if (bind(listenfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(listenfd, 4) < 0) {
		close(listenfd);
		listenfd = -1;
		return;
	}
	fchmodat(dirfd_, "console.sock", 0600, 0);
}

/* Serve the zone until its init exits; return its status. */
static int watch(pid_t init)
{
	char buf[16384];
	int status = 0;

	for (;;) {
		struct pollfd p[4];
		int n = 0, i_sig, i_listen = -1, i_master = -1, i_client = -1;

		if (reap(init, &status))
			break;
		p[n].fd = sigfd, p[n].events = POLLIN, i_sig = n++;
		if (master >= 0 && listenfd >= 0)
			p[n].fd = listenfd, p[n].events = POLLIN, i_listen = n++;
		if (master >= 0)
			p[n].fd = master, p[n].events = POLLIN, i_master = n++;
		if (client >= 0)
			p[n].fd = client, p[n].events = POLLIN, i_client = n++;
		if (poll(p, (nfds_t)n, -1) < 0)
			continue;
		if (p[i_sig].revents)
			drain_signals();
		if (i_master >= 0 && p[i_master].revents) {
			ssize_t r = read(master, buf, sizeof(buf));
			if (r > 0)
				console_out(buf, (size_t)r);
			else if (r == 0 || errno != EINTR) {
				/* EIO: no slave is open: keep polling nothing but the init */
				close(master);
				master = -1;
			}
		}
		if (i_client >= 0 && p[i_client].revents) {
			ssize_t r = read(client, buf, sizeof(buf));
			if (r > 0 && master >= 0)
				write_all(master, buf, (size_t)r);
			else if (r <= 0) {
				close(client);
				client = -1;
			}
		}
		if (i_listen >= 0 && p[i_listen].revents) {
			int c = accept4(listenfd, NULL, NULL, SOCK_CLOEXEC);
			if (c >= 0) {
				if (client >= 0)
					close(client);
				client = c;
			}
		}
	}
	if (master >= 0) {  /* what the zone wrote last */
		ssize_t r;
		fcntl(master, F_SETFL, O_NONBLOCK);
		while ((r = read(master, buf, sizeof(buf))) > 0)
			console_out(buf, (size_t)r);
		close(master);
		master = -1;
	}
	if (client >= 0) {
		close(client);
		client = -1;
	}
	return status;
}

static int run_hook(char **hook, int nhook, int code, sigset_t *old)
{
	char codestr[16];
	int st = 0;
	pid_t pid;

	snprintf(codestr, sizeof(codestr), "%d", code);
	hook[nhook] = codestr;
	hook[nhook + 1] = NULL;
	pid = spawn(hook, -1, old);
	if (pid < 0)
		return -1;
	for (;;) {
		struct pollfd p = { sigfd, POLLIN, 0 };
		if (reap(pid, &st))
			break;
		if (poll(&p, 1, -1) > 0)
			drain_signals();
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char **boot, **hook;
static int nhook, notify = -1, keeper = -1;
static sigset_t old_mask;

/* Tell the keeper (the monitor's parent half) which init to take over, with a copy of the
 * pty master: SOCK_DGRAM, one message per boot. */
static void tell_keeper(pid_t init)
{
	char text[32], cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { text, 0 };
	struct msghdr mh = { 0 };

	if (keeper < 0)
		return;
	iov.iov_len = (size_t)snprintf(text, sizeof(text), "%d", (int)init);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (master >= 0)
		attach_fd(&mh, cbuf, sizeof(cbuf), master);
	sendmsg(keeper, &mh, MSG_NOSIGNAL);
}

static void keep(pid_t monitor, int sock);

/* Split in two before a boot: the parent becomes the keeper (idle until its child is done:
 * returns 1 then), the child the monitor (returns 0). A keeper that took over splits again
 * at the next boot, so the zone always has one. Without resources for it: 0, alone. */
static int split(void)
{
	int ks[2];
	pid_t child;

	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, ks) < 0)
		return 0;
	child = fork();
	if (child < 0) {
		close(ks[0]);
		close(ks[1]);
		return 0;
	}
	if (child > 0) {
		close(ks[1]);
		if (notify >= 0) {  /* `zoned start` waits for the monitor's report only */
			close(notify);
			notify = -1;
		}
		keep(child, ks[0]);
		return 1;
	}
	close(ks[0]);
	keeper = ks[1];
	prctl(PR_SET_CHILD_SUBREAPER, 1);  /* not inherited by fork */
	return 0;
}

/* Boot (unless `adopted` names a running init), watch, run the hook; again on RESTART. */
static void serve(int first, pid_t adopted)
{
	for (;; first = 0) {
		int sv[2], st = 0, ok, code;
		pid_t worker, init = adopted;
		char msg[1024];

		if (!adopted && keeper < 0 && split())
			return;  /* the keeper's part is done */
		if (!adopted) {
			if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
				return;
			worker = spawn(boot, sv[1], &old_mask);
			close(sv[1]);
			ok = worker > 0 && receive_report(sv[0], &init, msg, sizeof(msg));
			close(sv[0]);
			watched = ok ? init : 0;
			watched_done = 0;
			if (worker > 0)
				while (!reap(worker, &st)) {
					struct pollfd p = { sigfd, POLLIN, 0 };
					if (poll(&p, 1, -1) > 0)
						drain_signals();
				}
			if (notify >= 0) {
				write_all(notify, msg, strlen(msg));
				close(notify);
				notify = -1;
			}
			if (!ok) {
				if (master >= 0)
					close(master), master = -1;
				/* a restart that failed: tell the hook (code -1: no zone ran) */
				if (!first && run_hook(hook, nhook, -1, &old_mask) == RESTART_STATUS)
					continue;
				return;
			}
			tell_keeper(init);
		}
		if (master >= 0 && listenfd < 0)
			open_console_socket();  /* only a zone with a terminal has a console */
		adopted = 0;
		code = status_code(watch(init));
		write_exit(code);
		if (run_hook(hook, nhook, code, &old_mask) != RESTART_STATUS)
			return;
	}
}

/* The keeper: the parent half, idle while the monitor (its child) lives. The monitor
 * being killed re-parents the zone's init here (the nearest subreaper), so the keeper
 * takes over with the init and pty it was told of: no exit code is lost. */
static void keep(pid_t monitor, int sock)
{
	pid_t init = 0;
	int st = 0;

	for (;;) {
		struct pollfd p[2] = { { sigfd, POLLIN, 0 }, { sock, POLLIN, 0 } };

		if (reap(monitor, &st))
			break;
		if (poll(p, 2, -1) < 0)
			continue;
		if (p[0].revents)
			drain_signals();
		if (p[1].revents) {
			char text[32], cbuf[CMSG_SPACE(sizeof(int))];
			struct iovec iov = { text, sizeof(text) - 1 };
			struct msghdr mh = { 0 };
			ssize_t n;

			mh.msg_iov = &iov;
			mh.msg_iovlen = 1;
			mh.msg_control = cbuf;
			mh.msg_controllen = sizeof(cbuf);
			n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
			if (n > 0) {
				text[n] = 0;
				init = (pid_t)atol(text);
				watched = init;  /* a status reaped with the monitor's is kept */
				watched_done = 0;
				if (master >= 0)
					close(master), master = -1;
				for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
					if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
						memcpy(&master, CMSG_DATA(c), sizeof(int));
			}
		}
	}
	close(sock);
	if (WIFEXITED(st) || init <= 0 || (!watched_done && kill(init, 0) < 0))
		return;  /* it finished its work (or no zone is left to watch) */
	fprintf(stderr, "zoned-monitor: monitor %d was killed; keeper %d takes over init %d\n",
		(int)monitor, (int)getpid(), (int)init);
	serve(0, init);
}

int main(int argc, char **argv)
{
	sigset_t mask;
	int sep = -1, lockfd;

	for (int i = 3; i < argc; i++)
		if (strcmp(argv[i], "--") == 0) {
			sep = i;
			break;
		}
	if (argc < 5 || sep < 0 || sep == 3 || sep == argc - 1) {
		fprintf(stderr, "usage: zoned-monitor DIR NOTIFY_FD BOOT... -- HOOK...\n");
		return 2;
	}
	notify = atoi(argv[2]);
	fcntl(notify, F_SETFD, FD_CLOEXEC);
	argv[sep] = NULL;
	boot = argv + 3;
	nhook = argc - sep - 1;
	hook = calloc((size_t)nhook + 2, sizeof(char *));
	if (!hook)
		return 1;
	memcpy(hook, argv + sep + 1, (size_t)nhook * sizeof(char *));

	dirfd_ = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd_ < 0) {
		perror("zoned-monitor: DIR");
		return 1;
	}
	/* held (shared by both halves) while any half lives: `zoned` asks "is a monitor
	 * alive?" by trying to lock it */
	lockfd = openat(dirfd_, "monitor.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB) < 0) {
		fprintf(stderr, "zoned-monitor: another monitor runs for %s\n", argv[1]);
		return 1;
	}
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, &old_mask);
	sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sigfd < 0) {
		perror("zoned-monitor: signalfd");
		return 1;
	}
	serve(1, 0);
	if (listenfd >= 0)
		unlinkat(dirfd_, "console.sock", 0);
	return 0;
}
