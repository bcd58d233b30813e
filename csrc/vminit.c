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
 *                  'S' signal (records target=main|exec, sig=N)
 *   guest -> host: 'P' started (pid), 'o' stdout, 'e' stderr, 'x' exit status, '!' error
 *
 * Static, like zoned-init: cc -static -Os -s -Wall -o zoned/libexec/zoned-vminit csrc/vminit.c
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

static void power_off(void) __attribute__((noreturn));
static void power_off(void)
{
	sync();
	/* microvm without ACPI has no power-off device: a reset (reboot=t triple fault) under
	 * QEMU's -no-reboot ends QEMU as well, so try power-off, then reset. */
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

static void set_ipv4(int s, const char *ifname, unsigned long req, const char *addr)
{
	struct ifreq ifr;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
	memset(&ifr, 0, sizeof ifr);
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
	sin->sin_family = AF_INET;
	if (inet_pton(AF_INET, addr, &sin->sin_addr) != 1 || ioctl(s, req, &ifr) < 0)
		fatal("%s: address %s: %s", ifname, addr, strerror(errno));
}

static void link_up(int s, const char *ifname)
{
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		fatal("%s: flags: %s", ifname, strerror(errno));
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		fatal("%s: up: %s", ifname, strerror(errno));
}

/* Finds the interface with MAC ("aa:bb:..."): the order virtio-mmio NICs probe in is not the
 * command line's, the MAC is the stable name. */
static int find_by_mac(int s, const char *mac, char *ifname)
{
	unsigned int b[6];
	if (sscanf(mac, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6)
		return -1;
	for (int tries = 0; tries < 2500; tries++) {
		struct if_nameindex *ifs = if_nameindex(), *i;
		for (i = ifs; i && i->if_name; i++) {
			struct ifreq ifr;
			memset(&ifr, 0, sizeof ifr);
			snprintf(ifr.ifr_name, IFNAMSIZ, "%s", i->if_name);
			if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0)
				continue;
			unsigned char *h = (unsigned char *)ifr.ifr_hwaddr.sa_data;
			int k;
			for (k = 0; k < 6 && h[k] == b[k]; k++)
				;
			if (k == 6) {
				snprintf(ifname, IFNAMSIZ, "%s", i->if_name);
				if_freenameindex(ifs);
				return 0;
			}
		}
		if (ifs)
			if_freenameindex(ifs);
		struct timespec ts = {0, 2000000};
		nanosleep(&ts, NULL);
	}
	return -1;
}

/* "nic=<mac> <ip>/<prefix> <gateway|->" */
static void configure_nic(int s, const char *spec)
{
	char mac[32], cidr[64], gw[64], ifname[IFNAMSIZ], mask[32];
	int prefix;
	if (sscanf(spec, "%31s %63s %63s", mac, cidr, gw) != 3)
		fatal("bad nic record: %s", spec);
	char *slash = strchr(cidr, '/');
	if (!slash)
		fatal("bad nic address: %s", cidr);
	*slash = 0;
	prefix = atoi(slash + 1);
	if (find_by_mac(s, mac, ifname) < 0)
		fatal("no interface with MAC %s", mac);
	uint32_t m = prefix ? htonl(~0u << (32 - prefix)) : 0;
	inet_ntop(AF_INET, &m, mask, sizeof mask);
	set_ipv4(s, ifname, SIOCSIFADDR, cidr);
	set_ipv4(s, ifname, SIOCSIFNETMASK, mask);
	link_up(s, ifname);
	if (strcmp(gw, "-")) {
		struct rtentry rt;
		memset(&rt, 0, sizeof rt);
		struct sockaddr_in *dst = (struct sockaddr_in *)&rt.rt_dst;
		struct sockaddr_in *gwa = (struct sockaddr_in *)&rt.rt_gateway;
		struct sockaddr_in *msk = (struct sockaddr_in *)&rt.rt_genmask;
		dst->sin_family = gwa->sin_family = msk->sin_family = AF_INET;
		if (inet_pton(AF_INET, gw, &gwa->sin_addr) != 1)
			fatal("bad gateway %s", gw);
		rt.rt_flags = RTF_UP | RTF_GATEWAY;
		rt.rt_dev = ifname;
		if (ioctl(s, SIOCADDRT, &rt) < 0 && errno != EEXIST)
			fatal("default route via %s: %s", gw, strerror(errno));
	}
}

static void configure_network(struct record *r, int n)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		fatal("socket: %s", strerror(errno));
	link_up(s, "lo");
	for (int i = 0; i < n; i++)
		if (!strcmp(r[i].key, "nic"))
			configure_nic(s, r[i].value);
	close(s);
}

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

/* ---------- the agent ---------- */

struct agent {
	int fd;              /* the zoned.agent port, O_NONBLOCK */
	int connected;       /* the host has the socket open */
	char *rx;            /* a partial frame */
	size_t rx_len, rx_cap;
	pid_t pid;           /* the exec'd process, 0 if none */
	int in_fd, out_fd, err_fd; /* its pipes (or one pty master in out_fd), -1 when closed */
	char *in_buf;        /* stdin not yet written */
	size_t in_len;
	int in_eof;
	int status, exited;
	int orphan;          /* its client went: its output and exit are not for the next one */
	char *pending;       /* an exec request waiting for an orphan to be reaped */
	uint32_t pending_len;
};

static void agent_orphan(struct agent *a);

/* Sends a frame; returns -1 (and the frame is dropped) once the host has gone. */
static int agent_send(struct agent *a, char type, const void *data, uint32_t len)
{
	if (!a->connected)
		return -1;
	char hdr[5] = {type, len & 0xff, (len >> 8) & 0xff, (len >> 16) & 0xff, len >> 24};
	struct { const char *p; size_t n; } parts[2] = {{hdr, 5}, {data, len}};
	for (int i = 0; i < 2; i++) {
		const char *p = parts[i].p;
		size_t n = parts[i].n;
		while (n > 0) {
			ssize_t w = write(a->fd, p, n);
			if (w > 0) {
				p += w;
				n -= w;
				continue;
			}
			if (w < 0 && errno == EINTR)
				continue;
			struct pollfd pf = {a->fd, POLLOUT, 0};
			if (w < 0 && errno == EAGAIN && poll(&pf, 1, 5000) > 0 && !(pf.revents & POLLHUP))
				continue;
			a->connected = 0;
			return -1;
		}
	}
	return 0;
}

static void agent_close_exec_fds(struct agent *a)
{
	if (a->in_fd >= 0 && a->in_fd != a->out_fd)
		close(a->in_fd);
	if (a->out_fd >= 0)
		close(a->out_fd);
	if (a->err_fd >= 0)
		close(a->err_fd);
	a->in_fd = a->out_fd = a->err_fd = -1;
	free(a->in_buf);
	a->in_buf = NULL;
	a->in_len = 0;
}

static void agent_exec(struct agent *a, char *payload, uint32_t len)
{
	static struct record recs[2 * MAX_ARGS + 16];
	static struct process p;
	static char *keep;
	char msg[300];

	if (a->pid) {
		/* QEMU's socket chardev serves one client at a time: an exec request while one
		 * runs means its client has gone (even if the guest never saw it disconnect, a
		 * quick reconnect hides that). It is killed; this one starts once it is reaped. */
		agent_orphan(a);
		free(a->pending);
		a->pending = payload;
		a->pending_len = len;
		return;
	}
	free(keep);
	keep = payload; /* the records point into it until the next exec */
	int n = parse_records(payload, len, recs, 2 * MAX_ARGS + 16);
	process_from(&p, recs, n);

	int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, master = -1;
	if (p.tty) {
		master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) {
			snprintf(msg, sizeof msg, "pty: %s", strerror(errno));
			agent_send(a, '!', msg, strlen(msg));
			return;
		}
	} else if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
		snprintf(msg, sizeof msg, "pipe: %s", strerror(errno));
		agent_send(a, '!', msg, strlen(msg));
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		if (p.tty) {
			int slave = open(ptsname(master), O_RDWR);
			if (slave < 0)
				_exit(126);
			set_ctty(slave, &p);
		} else {
			setsid();
			dup2(in[0], 0);
			dup2(out[1], 1);
			dup2(err[1], 2);
		}
		exec_process(&p);
	}
	if (pid < 0) {
		snprintf(msg, sizeof msg, "fork: %s", strerror(errno));
		agent_send(a, '!', msg, strlen(msg));
		return;
	}
	a->pid = pid;
	a->exited = 0;
	a->orphan = 0;
	if (p.tty) {
		a->in_fd = a->out_fd = master;
		a->err_fd = -1;
	} else {
		close(in[0]);
		close(out[1]);
		close(err[1]);
		a->in_fd = in[1];
		a->out_fd = out[0];
		a->err_fd = err[0];
	}
	fcntl(a->in_fd, F_SETFL, O_NONBLOCK);
	a->in_eof = 0;
	int l = snprintf(msg, sizeof msg, "%d", pid);
	agent_send(a, 'P', msg, l);
}

static void agent_signal(struct agent *a, pid_t main_pid, char *payload, uint32_t len)
{
	struct record recs[8];
	int n = parse_records(payload, len, recs, 8);
	const char *target = record_get(recs, n, "target");
	const char *sig = record_get(recs, n, "sig");
	pid_t pid = (target && !strcmp(target, "exec")) ? a->pid : main_pid;
	char msg[100];
	if (!sig || pid <= 0) {
		snprintf(msg, sizeof msg, "no such process");
		agent_send(a, '!', msg, strlen(msg));
		return;
	}
	if (kill(pid, atoi(sig)) < 0) {
		snprintf(msg, sizeof msg, "kill: %s", strerror(errno));
		agent_send(a, '!', msg, strlen(msg));
	}
}

static void agent_flush_stdin(struct agent *a)
{
	while (a->in_len > 0 && a->in_fd >= 0) {
		ssize_t w = write(a->in_fd, a->in_buf, a->in_len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			return;
		if (w < 0) { /* the process closed its stdin: drop the rest */
			a->in_len = 0;
			break;
		}
		memmove(a->in_buf, a->in_buf + w, a->in_len - w);
		a->in_len -= w;
	}
	if (a->in_len == 0 && a->in_eof && a->in_fd >= 0 && a->in_fd != a->out_fd) {
		close(a->in_fd);
		a->in_fd = -1;
	} else if (a->in_len == 0 && a->in_eof && a->in_fd == a->out_fd && a->in_eof == 1) {
		char eot = 4; /* ^D on a terminal */
		(void)!write(a->in_fd, &eot, 1);
		a->in_eof = 2;
	}
}

static void agent_frame(struct agent *a, pid_t main_pid, char type, char *payload, uint32_t len)
{
	switch (type) {
	case 'E': {
		char *copy = malloc(len + 1);
		memcpy(copy, payload, len);
		copy[len] = 0;
		agent_exec(a, copy, len);
		break;
	}
	case 'I':
		if (a->in_fd < 0)
			break;
		a->in_buf = realloc(a->in_buf, a->in_len + len);
		memcpy(a->in_buf + a->in_len, payload, len);
		a->in_len += len;
		agent_flush_stdin(a);
		break;
	case 'C':
		if (!a->in_eof)
			a->in_eof = 1;
		agent_flush_stdin(a);
		break;
	case 'S':
		payload[len] = 0;
		agent_signal(a, main_pid, payload, len);
		break;
	}
}

/* One exec at a time, owned by one client: when it goes, so does its process (its group),
 * and nothing more of it is read or reported. */
static void agent_orphan(struct agent *a)
{
	if (a->pid > 0 && !a->orphan) {
		if (!a->exited)
			kill(-a->pid, SIGKILL);
		a->orphan = 1;
		agent_close_exec_fds(a);
	}
}

static void agent_disconnected(struct agent *a)
{
	a->connected = 0;
	a->rx_len = 0;
	free(a->pending);
	a->pending = NULL;
	agent_orphan(a);
}

static void agent_process(struct agent *a, pid_t main_pid);

/* Reads what the host sent and handles the whole frames in it. */
static void agent_read(struct agent *a, pid_t main_pid)
{
	for (;;) {
		if (a->rx_cap - a->rx_len < 65536)
			a->rx = realloc(a->rx, a->rx_cap = a->rx_cap * 2 + 65536);
		ssize_t r = read(a->fd, a->rx + a->rx_len, a->rx_cap - a->rx_len - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		a->rx_len += r;
	}
	agent_process(a, main_pid);
}

/* Handles the whole frames received; those after an exec request that waits for an orphan
 * wait too (its stdin EOF must reach it, not the orphan). */
static void agent_process(struct agent *a, pid_t main_pid)
{
	size_t off = 0;
	while (a->rx_len - off >= 5 && !a->pending) {
		unsigned char *h = (unsigned char *)a->rx + off;
		uint32_t len = h[1] | h[2] << 8 | h[3] << 16 | (uint32_t)h[4] << 24;
		if (len > FRAME_MAX) { /* garbage: resynchronising is impossible, drop the lot */
			off = a->rx_len;
			break;
		}
		if (a->rx_len - off - 5 < len)
			break;
		char saved = a->rx[off + 5 + len]; /* 'S' NUL-terminates in place */
		agent_frame(a, main_pid, h[0], a->rx + off + 5, len);
		a->rx[off + 5 + len] = saved;
		off += 5 + len;
	}
	memmove(a->rx, a->rx + off, a->rx_len - off);
	a->rx_len -= off;
}

/* Forwards one chunk of the exec'd process' output; at EOF closes that pipe. */
static void agent_pump(struct agent *a, int *fd, char type)
{
	char buf[65536];
	ssize_t r = read(*fd, buf, sizeof buf);
	if (r < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (r <= 0) { /* EOF (EIO on a pty whose slave side is gone) */
		if (*fd == a->in_fd)
			a->in_fd = -1;
		close(*fd);
		*fd = -1;
		return;
	}
	if (!a->orphan)
		agent_send(a, type, buf, r);
}

static void agent_maybe_done(struct agent *a)
{
	if (a->pid > 0 && a->exited && a->out_fd < 0 && a->err_fd < 0) {
		char msg[32];
		int l = snprintf(msg, sizeof msg, "%d", status_code(a->status));
		if (!a->orphan)
			agent_send(a, 'x', msg, l);
		agent_close_exec_fds(a);
		a->pid = 0;
		a->orphan = 0;
	}
	if (a->pid == 0 && a->pending) {
		char *next = a->pending;
		a->pending = NULL;
		agent_exec(a, next, a->pending_len);
	}
}

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
		in_fd = open_port("zoned.stdin", O_RDONLY, 5000);
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
