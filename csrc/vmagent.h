/*
 * zoned-vminit's guest agent (the zoned.agent port; see the frame format in vminit.c):
 * EXEC one process at a time with its own stdin/stdout/stderr (or a pty), SIGNAL to the
 * main or the exec'd process. Part of zoned-vminit: included once by csrc/vminit.c, after
 * its helpers (write_all, records, processes).
 */

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
	case 'H':
		/* The kernel takes a new client's data at interrupt time but its "host
		 * connected" message later, in a worker: until then anything sent back is
		 * dropped (agent_send). So an exec client says hello until it hears back,
		 * and only then asks for the exec, whose P it would otherwise never get. */
		agent_send(a, 'h', NULL, 0);
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
