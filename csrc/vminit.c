/*
 * zoned-vminit: PID 1 of a zoned micro-VM (the guest side of zoned/vm/).
 *
 * It runs from the initramfs zoned builds (zoned/vm/initramfs.py): this binary as /init, the
 * kernel modules the guest needs under /lib/modules (loaded in the order of load-order), and
 * the VM's configuration as /zoned/config, appended per VM as a second cpio archive.
 *
 * Boot: load the modules, mount the image's read-only squashfs (/dev/vda) with a tmpfs upper
 * in an overlay (the tmpfs lives in guest RAM, so it migrates with it), write hostname, hosts,
 * resolv.conf, configure the NICs (matched by MAC, plain ioctls), switch root into the overlay
 * and start the zone's process with the config's argv/env/cwd/uid/gid.  Its stdio are the
 * virtio-serial ports zoned.stdin/stdout/stderr, or hvc0 as controlling terminal with tty=1.
 *
 * Then it stays PID 1: it reaps orphans, serves the agent port (zoned.agent: EXEC one process
 * at a time with its own stdin/stdout/stderr streams, SIGNAL to the main or the exec'd
 * process), and when the main process exits it writes "exit N" (signal n -> 128+n) to the
 * zoned.ctl port and powers the VM off.
 *
 * Config and agent payloads are records "key=value\0" (zoned/vm/config.py is the host side).
 * Agent frames: type (1 byte), payload length (u32 little endian), payload.
 *   host -> guest: 'E' exec request (records), 'I' stdin bytes, 'C' stdin EOF,
 *                  'S' signal (records target=main|exec, sig=N), 'H' hello
 *   guest -> host: 'P' started (pid), 'o' stdout, 'e' stderr, 'x' exit status, '!' error,
 *                  'h' hello answered (only once the guest knows the client is there)
 *
 * Static, like zoned-init: cc -static -Os -s -Wall -Icsrc -o zoned/libexec/zoned-vminit csrc/vminit.c
 * (with csrc/vmnet.h and csrc/vmagent.h, included once below).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <net/route.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_ARGS 1024
#define FRAME_MAX (1 << 20)

/* ---------- small helpers ---------- */

static int ctl_fd = -1;

static void logmsg(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof buf - 2)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	/* The kernel console (ttyS0 -> <vmdir>/console.log on the host). */
	int k = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
	if (k >= 0) {
		(void)!write(k, buf, n);
		close(k);
	}
}

static void write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		c += w;
		n -= w;
	}
}

/* /proc/sysrq-trigger, opened while the initramfs' /proc is mounted (the fd outlives its
 * lazy unmount at the switch of root); -1 if the kernel has no magic SysRq. */
static int sysrq_fd = -1;

static void power_off(void) __attribute__((noreturn));
static void power_off(void)
{
	sync();
	/* SysRq 'b' resets at once (reboot=t: a triple fault, which ends QEMU under its
	 * -no-reboot), skipping the kernel's device shutdown, which loses nothing here: the
	 * root is a squashfs under a tmpfs, 9p writes through, and the ports' blocking writes
	 * have returned. A power-off or orderly reboot runs that shutdown, and in the guest
	 * kernel (Debian's 6.1) it breaks each virtio device's queues while virtio-net's NAPI
	 * may still poll them: virtnet_poll_cleantx then spins in ksoftirqd for good, as about
	 * one exit in 50 of a VM with a busy NIC did (Linux commit 0d0eff39ceb3 fixes it). */
	if (sysrq_fd >= 0)
		write(sysrq_fd, "b", 1);
	/* Without SysRq: power off (microvm's ACPI), else an orderly reset. */
	reboot(RB_POWER_OFF);
	reboot(RB_AUTOBOOT);
	for (;;)
		pause();
}

static void fatal(const char *fmt, ...) __attribute__((noreturn));
static void fatal(const char *fmt, ...)
{
	char buf[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	logmsg("zoned-vminit: %s", buf);
	if (ctl_fd >= 0) {
		char line[460];
		int n = snprintf(line, sizeof line, "error %s\n", buf);
		write_all(ctl_fd, line, n);
	}
	power_off();
}

static char *read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap + 1);
	for (;;) {
		if (n == cap)
			buf = realloc(buf, (cap *= 2) + 1);
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += r;
	}
	close(fd);
	buf[n] = 0;
	if (len)
		*len = n;
	return buf;
}

static int write_file(const char *path, const char *data, size_t n, int mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -1;
	write_all(fd, data, n);
	return close(fd);
}

static void mkdir_p(const char *path, int mode)
{
	char buf[512];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++)
		if (*p == '/') {
			*p = 0;
			mkdir(buf, mode);
			*p = '/';
		}
	mkdir(buf, mode);
}

static void do_mount(const char *src, const char *dst, const char *type, unsigned long flags,
		     const char *data)
{
	mkdir_p(dst, 0755);
	if (mount(src, dst, type, flags, data) < 0)
		fatal("mount %s on %s: %s", type, dst, strerror(errno));
}

/* ---------- config records ---------- */

struct record {
	const char *key;   /* NUL-terminated */
	const char *value; /* NUL-terminated */
};

/* Splits "key=value\0key=value\0..." in place; returns the number of records. */
static int parse_records(char *buf, size_t len, struct record *out, int max)
{
	int n = 0;
	size_t i = 0;
	while (i < len && n < max) {
		char *rec = buf + i;
		size_t l = strnlen(rec, len - i);
		if (i + l >= len)
			rec[l] = 0; /* last record without its NUL: buf has room (read_file) */
		char *eq = strchr(rec, '=');
		if (eq) {
			*eq = 0;
			out[n].key = rec;
			out[n].value = eq + 1;
			n++;
		}
		i += l + 1;
	}
	return n;
}

struct process {
	char *argv[MAX_ARGS + 1];
	char *envp[MAX_ARGS + 1];
	const char *cwd;
	uid_t uid;
	gid_t gid;
	gid_t groups[64]; /* supplementary */
	int ngroups;
	int tty;
	int rows, cols;
};

static void process_from(struct process *p, struct record *r, int n)
{
	int na = 0, ne = 0;
	memset(p, 0, sizeof *p);
	p->cwd = "/";
	for (int i = 0; i < n; i++) {
		const char *k = r[i].key, *v = r[i].value;
		if (!strcmp(k, "arg") && na < MAX_ARGS)
			p->argv[na++] = (char *)v;
		else if (!strcmp(k, "env") && ne < MAX_ARGS)
			p->envp[ne++] = (char *)v;
		else if (!strcmp(k, "cwd"))
			p->cwd = v;
		else if (!strcmp(k, "uid"))
			p->uid = strtoul(v, NULL, 10);
		else if (!strcmp(k, "gid"))
			p->gid = strtoul(v, NULL, 10);
		else if (!strcmp(k, "group") && p->ngroups < 64)
			p->groups[p->ngroups++] = strtoul(v, NULL, 10);
		else if (!strcmp(k, "tty"))
			p->tty = atoi(v);
		else if (!strcmp(k, "rows"))
			p->rows = atoi(v);
		else if (!strcmp(k, "cols"))
			p->cols = atoi(v);
	}
}

static const char *record_get(struct record *r, int n, const char *key)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(r[i].key, key))
			return r[i].value;
	return NULL;
}

/* ---------- boot steps ---------- */

static void load_modules(const char *list)
{
	char *order = read_file(list, NULL);
	if (!order)
		return;
	for (char *save, *name = strtok_r(order, "\n", &save); name; name = strtok_r(NULL, "\n", &save)) {
		char path[256];
		snprintf(path, sizeof path, "/lib/modules/%s.ko", name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			fatal("module %s: %s", path, strerror(errno));
		if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)
			fatal("finit_module %s: %s", name, strerror(errno));
		close(fd);
		unlink(path); /* the initramfs is RAM: give it back */
	}
	free(order);
}

/* Waits (virtio-serial ports appear asynchronously) for the port named NAME; opens it. */
static int open_port(const char *name, int flags, int wait_ms)
{
	for (int waited = 0; waited <= wait_ms; waited += 2) {
		DIR *d = opendir("/sys/class/virtio-ports");
		struct dirent *e;
		while (d && (e = readdir(d))) {
			if (e->d_name[0] == '.')
				continue;
			char path[300], *have;
			snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
			have = read_file(path, NULL);
			if (!have)
				continue;
			have[strcspn(have, "\n")] = 0;
			int match = !strcmp(have, name);
			free(have);
			if (match) {
				snprintf(path, sizeof path, "/dev/%s", e->d_name);
				int fd = open(path, flags | O_CLOEXEC);
				if (fd >= 0) {
					closedir(d);
					return fd;
				}
			}
		}
		if (d)
			closedir(d);
		struct timespec ts = {0, 2000000};
		nanosleep(&ts, NULL);
	}
	return -1;
}

static int open_wait(const char *path, int flags, int wait_ms)
{
	for (int waited = 0; waited <= wait_ms; waited += 2) {
		int fd = open(path, flags | O_CLOEXEC);
		if (fd >= 0)
			return fd;
		struct timespec ts = {0, 2000000};
		nanosleep(&ts, NULL);
	}
	return -1;
}

#include "vmnet.h"

/* Removes the initramfs' remaining files (its RAM is not freed otherwise), like switch_root. */
static void clean_initramfs(void)
{
	unlink("/init");
	unlink("/zoned/config");
	unlink("/lib/modules/load-order");
	unlink("/lib/modules/load-order-9p");
	/* 9p modules not loaded (no volumes) */
	DIR *d = opendir("/lib/modules");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char path[300];
		snprintf(path, sizeof path, "/lib/modules/%s", e->d_name);
		if (e->d_name[0] != '.')
			unlink(path);
	}
	if (d)
		closedir(d);
	rmdir("/lib/modules");
	rmdir("/lib");
	rmdir("/zoned");
}

/* ---------- processes ---------- */

static void set_default_env(struct process *p)
{
	int n = 0;
	while (p->envp[n])
		n++;
	for (int i = 0; i < n; i++)
		if (!strncmp(p->envp[i], "PATH=", 5))
			return;
	if (n < MAX_ARGS)
		p->envp[n] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
}

/* In the forked child: become p's user in p's cwd and exec it; 127/126 like a shell. */
static void exec_process(struct process *p) __attribute__((noreturn));
static void exec_process(struct process *p)
{
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_UNBLOCK, &all, NULL);
	for (int s = 1; s < NSIG; s++)
		signal(s, SIG_DFL);
	set_default_env(p);
	if (!p->argv[0]) {
		dprintf(2, "zoned-vm: no command\n");
		_exit(127);
	}
	if (setgroups(p->ngroups, p->groups) < 0 || setgid(p->gid) < 0 || setuid(p->uid) < 0) {
		dprintf(2, "zoned-vm: user %u:%u: %s\n", p->uid, p->gid, strerror(errno));
		_exit(126);
	}
	if (chdir(p->cwd) < 0) {
		dprintf(2, "zoned-vm: cwd %s: %s\n", p->cwd, strerror(errno));
		_exit(126);
	}
	environ = p->envp;
	execvp(p->argv[0], p->argv);
	int err = errno;
	dprintf(2, "zoned-vm: exec %s: %s\n", p->argv[0], strerror(err));
	_exit(err == ENOENT ? 127 : 126);
}

static void set_ctty(int fd, struct process *p)
{
	setsid();
	ioctl(fd, TIOCSCTTY, 1);
	if (p->rows > 0 && p->cols > 0) {
		struct winsize ws = {.ws_row = p->rows, .ws_col = p->cols};
		ioctl(fd, TIOCSWINSZ, &ws);
	}
	dup2(fd, 0);
	dup2(fd, 1);
	dup2(fd, 2);
}

static int status_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 1;
}

#include "vmagent.h"

/* ---------- main ---------- */

int main(int argc, char **argv)
{
	static struct record recs[2 * MAX_ARGS + 64];
	struct process main_proc;
	size_t cfg_len;

	if (getpid() != 1) {
		fprintf(stderr, "zoned-vminit: runs only as a VM's PID 1\n");
		return 2;
	}
	mkdir("/dev", 0755);
	mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	do_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	do_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	sysrq_fd = open("/proc/sysrq-trigger", O_WRONLY | O_CLOEXEC);

	char *cfg = read_file("/zoned/config", &cfg_len);
	if (!cfg)
		fatal("no /zoned/config in the initramfs");
	int nrec = parse_records(cfg, cfg_len, recs, sizeof recs / sizeof recs[0]);
	process_from(&main_proc, recs, nrec);
	if (record_get(recs, nrec, "probe")) {
		/* zoned.vm.accel's marker boot: reaching here is the proof. */
		int con = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
		if (con >= 0)
			write_all(con, "zoned-vminit: probe ok\n", 23);
		power_off();
	}

	load_modules("/lib/modules/load-order");
	if (record_get(recs, nrec, "volume"))
		load_modules("/lib/modules/load-order-9p");
	ctl_fd = open_port("zoned.ctl", O_WRONLY, 5000);
	if (ctl_fd < 0)
		fatal("no zoned.ctl port");

	/* The root: squashfs lower, tmpfs upper, overlay on /newroot. */
	int vda = open_wait("/dev/vda", O_RDONLY, 5000);
	if (vda < 0)
		fatal("no root disk /dev/vda");
	close(vda);
	do_mount("/dev/vda", "/lower", "squashfs", MS_RDONLY, NULL);
	do_mount("tmpfs", "/rw", "tmpfs", 0, "mode=0755");
	mkdir("/rw/upper", 0755);
	mkdir("/rw/work", 0755);
	do_mount("overlay", "/newroot", "overlay", 0,
		 "lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work");
	do_mount("proc", "/newroot/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	do_mount("sysfs", "/newroot/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	do_mount("devtmpfs", "/newroot/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	do_mount("devpts", "/newroot/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
		 "newinstance,ptmxmode=0666,mode=0620");
	do_mount("tmpfs", "/newroot/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	unlink("/newroot/dev/ptmx");
	symlink("pts/ptmx", "/newroot/dev/ptmx");

	/* "volume=<tag> <ro|rw> <guest path>": a 9p export of a host directory. */
	for (int i = 0; i < nrec; i++) {
		char tag[64], mode[4], target[600];
		int at = 0;
		if (strcmp(recs[i].key, "volume"))
			continue;
		if (sscanf(recs[i].value, "%63s %3s %n", tag, mode, &at) != 2 || !at)
			fatal("bad volume record: %s", recs[i].value);
		snprintf(target, sizeof target, "/newroot%s", recs[i].value + at);
		do_mount(tag, target, "9p", strcmp(mode, "ro") ? 0 : MS_RDONLY,
			 "trans=virtio,version=9p2000.L,msize=262144");
	}

	const char *hostname = record_get(recs, nrec, "hostname");
	if (hostname) {
		sethostname(hostname, strlen(hostname));
		mkdir("/newroot/etc", 0755);
		char line[300];
		int l = snprintf(line, sizeof line, "%s\n", hostname);
		write_file("/newroot/etc/hostname", line, l, 0644);
	}
	const char *hosts = record_get(recs, nrec, "hosts");
	if (hosts) {
		mkdir("/newroot/etc", 0755);
		write_file("/newroot/etc/hosts", hosts, strlen(hosts), 0644);
	}
	const char *resolv = record_get(recs, nrec, "resolv");
	if (resolv) {
		mkdir("/newroot/etc", 0755);
		unlink("/newroot/etc/resolv.conf"); /* may be a dangling symlink */
		write_file("/newroot/etc/resolv.conf", resolv, strlen(resolv), 0644);
	}
	configure_network(recs, nrec);

	int in_fd = -1, out_fd = -1, err_fd = -1, con_fd = -1;
	if (main_proc.tty) {
		con_fd = open_wait("/dev/hvc0", O_RDWR | O_NOCTTY, 5000);
		if (con_fd < 0)
			fatal("no console hvc0");
	} else {
		/* Without stdin (no port: each one costs the guest ~4 MiB of receive buffers)
		 * the process reads /dev/null. */
		in_fd = record_get(recs, nrec, "stdin") && !strcmp(record_get(recs, nrec, "stdin"), "0")
			? open("/newroot/dev/null", O_RDONLY | O_CLOEXEC)
			: open_port("zoned.stdin", O_RDONLY, 5000);
		out_fd = open_port("zoned.stdout", O_WRONLY, 5000);
		err_fd = open_port("zoned.stderr", O_WRONLY, 5000);
		if (in_fd < 0 || out_fd < 0 || err_fd < 0)
			fatal("no stdio ports");
	}
	struct agent ag = {.fd = open_port("zoned.agent", O_RDWR | O_NONBLOCK, 5000),
			   .in_fd = -1, .out_fd = -1, .err_fd = -1};
	if (ag.fd < 0)
		fatal("no zoned.agent port");
	/* SIGIO tells of the host connecting to / leaving the agent socket. */
	fcntl(ag.fd, F_SETOWN, 1);
	fcntl(ag.fd, F_SETFL, O_NONBLOCK | O_ASYNC);

	/* Switch root: the initramfs becomes unreachable, the overlay is "/". */
	umount2("/proc", MNT_DETACH);
	umount2("/sys", MNT_DETACH);
	umount2("/dev", MNT_DETACH);
	clean_initramfs();
	if (chdir("/newroot") < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 ||
	    chdir("/") < 0)
		fatal("switch root: %s", strerror(errno));

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGIO);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGPIPE);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

	write_all(ctl_fd, "ready\n", 6);
	pid_t main_pid = fork();
	if (main_pid == 0) {
		if (main_proc.tty) {
			set_ctty(con_fd, &main_proc);
		} else {
			setsid();
			dup2(in_fd, 0);
			dup2(out_fd, 1);
			dup2(err_fd, 2);
		}
		exec_process(&main_proc);
	}
	if (main_pid < 0)
		fatal("fork: %s", strerror(errno));
	if (con_fd >= 0)
		close(con_fd);
	if (in_fd >= 0) {
		close(in_fd);
		close(out_fd);
		close(err_fd);
	}

	int main_status = -1;
	for (;;) {
		struct pollfd pf[5];
		int n = 0, i_sig, i_agent = -1, i_out = -1, i_err = -1, i_in = -1;
		pf[n] = (struct pollfd){sfd, POLLIN, 0};
		i_sig = n++;
		/* While the host is away the port polls HUP at once, so it is polled only while
		 * connected; SIGIO (or the 1 s timeout) says when a client comes. */
		struct pollfd probe = {ag.fd, POLLIN, 0};
		poll(&probe, 1, 0);
		int was = ag.connected;
		ag.connected = !(probe.revents & POLLHUP);
		if (was && !ag.connected)
			agent_disconnected(&ag);
		if (probe.revents & POLLIN)
			agent_read(&ag, main_pid);
		if (ag.connected) {
			pf[n] = (struct pollfd){ag.fd, POLLIN, 0};
			i_agent = n++;
		}
		if (ag.out_fd >= 0) {
			pf[n] = (struct pollfd){ag.out_fd, POLLIN, 0};
			i_out = n++;
		}
		if (ag.err_fd >= 0) {
			pf[n] = (struct pollfd){ag.err_fd, POLLIN, 0};
			i_err = n++;
		}
		if (ag.in_fd >= 0 && ag.in_fd != ag.out_fd && ag.in_len > 0) {
			pf[n] = (struct pollfd){ag.in_fd, POLLOUT, 0};
			i_in = n++;
		}
		int timeout = ag.connected ? -1 : 1000;
		if (poll(pf, n, timeout) < 0 && errno != EINTR)
			fatal("poll: %s", strerror(errno));
		if (pf[i_sig].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof si) == sizeof si)
				if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT || si.ssi_signo == SIGHUP)
					kill(main_pid, si.ssi_signo);
			int status;
			pid_t pid;
			while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
				if (pid == main_pid)
					main_status = status;
				else if (pid == ag.pid) {
					ag.status = status;
					ag.exited = 1;
				}
			}
		}
		if (i_agent >= 0 && (pf[i_agent].revents & POLLIN))
			agent_read(&ag, main_pid);
		if (i_out >= 0 && (pf[i_out].revents & (POLLIN | POLLHUP | POLLERR)))
			agent_pump(&ag, &ag.out_fd, 'o');
		if (i_err >= 0 && (pf[i_err].revents & (POLLIN | POLLHUP | POLLERR)))
			agent_pump(&ag, &ag.err_fd, 'e');
		if (i_in >= 0 && (pf[i_in].revents & (POLLOUT | POLLERR | POLLHUP)))
			agent_flush_stdin(&ag);
		agent_maybe_done(&ag);
		agent_process(&ag, main_pid);
		if (main_status != -1) {
			char line[32];
			int l = snprintf(line, sizeof line, "exit %d\n", status_code(main_status));
			write_all(ctl_fd, line, l);
			fsync(ctl_fd);
			power_off();
		}
	}
	(void)argc;
	(void)argv;
}
