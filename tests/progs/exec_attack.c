/*
 * exec_attack: what zone root tries against processes zoned puts into its pid namespace
 * (CVE-2019-5736 class). For SECONDS it spins over /proc (a full scan now and then, and the
 * next few pids on every round, to catch short-lived processes) and for every other process
 * it sees it
 *   - opens /proc/PID/exe (a host binary here could be rewritten once nothing runs it), and
 *   - attaches to it with ptrace (a tracer can run any syscall as the tracee), then detaches.
 * An exe that is neither this program nor the zone's busybox nor a memfd sealed against
 * writes (zoned-spawn's copy) is a host binary.
 *
 * Usage: exec_attack SECONDS OUTFILE [PID]   (PID: attack only that one, e.g. 1)
 * OUTFILE gets one line: seen=N opened=N opened_host=N attached=N attached_host=N
 * sealed=N host=PATH
 * Built static (the busybox image has no libc): cc -static -O2 -o exec_attack exec_attack.c
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXPID 4194304

static struct stat self_exe, busybox;
static int seen, opened, opened_host, attached, attached_host, sealed;
static char host_path[512];
static unsigned char known[MAXPID / 8];

static int is_zone_binary(const struct stat *st)
{
	return (st->st_dev == self_exe.st_dev && st->st_ino == self_exe.st_ino) ||
	       (st->st_dev == busybox.st_dev && st->st_ino == busybox.st_ino);
}

/* 1 if /proc/PID/exe (opened, or through fd) is a host binary; remembers its name. */
static int host_exe(int pid, int fd)
{
	struct stat st;
	char link[64], target[sizeof(host_path)];
	ssize_t n;
	int seals;

	if (fstat(fd, &st) < 0 || is_zone_binary(&st))
		return 0;
	seals = fcntl(fd, F_GET_SEALS);  /* -1 (EINVAL) for anything but a memfd */
	if (seals >= 0 && (seals & (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW)) ==
	    (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW)) {
		sealed++;
		return 0;
	}
	snprintf(link, sizeof(link), "/proc/%d/exe", pid);
	n = readlink(link, target, sizeof(target) - 1);
	target[n > 0 ? n : 0] = 0;
	if (!host_path[0])
		snprintf(host_path, sizeof(host_path), "%s", n > 0 ? target : "?");
	return 1;
}

static void attack(int pid)
{
	char path[64];
	int fd, status;

	if (pid <= 0 || pid == getpid() || pid >= MAXPID)
		return;
	snprintf(path, sizeof(path), "/proc/%d/exe", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (!(known[pid / 8] & (1 << (pid % 8)))) {
		char dir[32];
		snprintf(dir, sizeof(dir), "/proc/%d", pid);
		if (access(dir, F_OK) == 0) {
			known[pid / 8] |= 1 << (pid % 8);
			seen++;
		}
	}
	if (fd >= 0) {
		opened++;
		opened_host += host_exe(pid, fd);
		close(fd);
	}
	/* SEIZE + INTERRUPT: ATTACH's permission check, but no SIGSTOP left behind */
	if (ptrace(PTRACE_SEIZE, pid, 0, 0) == 0) {
		attached++;
		if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) == 0)
			waitpid(pid, &status, __WALL);
		fd = open(path, O_RDONLY | O_CLOEXEC); /* a tracer may read it */
		if (fd >= 0) {
			attached_host += host_exe(pid, fd);
			close(fd);
		}
		ptrace(PTRACE_DETACH, pid, 0, 0);
		kill(pid, SIGCONT); /* never leave a process stopped behind */
	}
}

static int scan(void)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int max = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		int pid = atoi(e->d_name);
		if (pid > 0) {
			attack(pid);
			if (pid > max)
				max = pid;
		}
	}
	closedir(d);
	return max;
}

int main(int argc, char **argv)
{
	double seconds;
	struct timespec start, now;
	int only = 0, max = 0, round = 0;
	FILE *out;

	if (argc < 3) {
		fprintf(stderr, "usage: exec_attack SECONDS OUTFILE [PID]\n");
		return 2;
	}
	seconds = atof(argv[1]);
	if (argc > 3)
		only = atoi(argv[3]);
	if (stat("/proc/self/exe", &self_exe) < 0 || stat("/bin/busybox", &busybox) < 0) {
		perror("stat");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		if (only) {
			attack(only);
		} else {
			if (round++ % 64 == 0)
				max = scan();
			for (int p = max + 1; p <= max + 3; p++)
				attack(p);
			for (int p = max + 1; p <= max + 3; p++)
				if (known[p / 8] & (1 << (p % 8)))
					max = p;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
	out = fopen(argv[2], "w");
	if (!out) {
		perror(argv[2]);
		return 2;
	}
	fprintf(out, "seen=%d opened=%d opened_host=%d attached=%d attached_host=%d sealed=%d "
		"host=%s\n", seen, opened, opened_host, attached, attached_host, sealed,
		host_path[0] ? host_path : "-");
	fclose(out);
	return 0;
}
