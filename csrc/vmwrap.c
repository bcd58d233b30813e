/*
 * zoned-vmwrap: QEMU's parent, for every VM zoned starts. It runs QEMU as its child and
 * exits with the *guest's* exit code, which the guest's init wrote to the VM's ctl file
 * ("exit N"): QEMU itself exits 0 when the guest ends, whatever the container's process
 * returned. An OCI client (podman's conmon, containerd's shim) sees it as the container's
 * init; for zoned's own detached VMs it records how QEMU ended, which nothing else could
 * (QEMU is nobody else's child once zoned has returned).
 *
 *   zoned-vmwrap [--go FD] [--status FILE] [--caps HEX] CTL_PATH QEMU ARGS...
 *
 * --go FD: QEMU is started once a byte arrives on FD: the caller moves this process into
 *   the VM's cgroups first, so QEMU starts in them (a process forked before that move
 *   would stay in the caller's). EOF first: no QEMU, exit 125.
 * --status FILE: made and locked (flock) before QEMU starts; once QEMU has ended, its end
 *   is written there ("signal N" when a signal ended it: one that killed QEMU, or one
 *   this wrapper passed on to it; else "exit N", QEMU's own code) and the lock goes with
 *   this process. A reader that finds QEMU gone takes the lock, then reads the last word.
 *
 * The ctl file is written by zoned-vmlog from a pipe QEMU writes (zoned/vm/vmlog.py): this
 * process closes its own copies of QEMU's fds once QEMU runs, and after QEMU's exit waits
 * for zoned-vmlog's lock on ctl, so the guest's last line is read once it is written.
 *
 * --caps HEX: QEMU keeps only these capabilities (a mask, bit N: capability N), and
 *   runs with no_new_privs: the bounding, inheritable and ambient sets are cut before its
 *   exec, so an exploited QEMU (it parses the guest's devices and a saved VM's stream)
 *   cannot load modules, mount, ptrace zoned or reconfigure the host's network, as
 *   libvirt's and Kata's QEMUs cannot. Fails closed: no QEMU (exit 125) if a drop fails.
 *
 * TERM, INT, HUP, QUIT, USR1 and USR2 are passed on to QEMU. If QEMU ends without the
 * guest having reported (a crash, SIGKILL), the exit status is 128+signal or QEMU's own.
 * Static and tiny: one per VM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile pid_t child;
static volatile sig_atomic_t passed_on;	/* the last signal passed on to QEMU */

static void forward(int sig)
{
    pid_t to = child;  /* 0 once QEMU has ended: nothing is passed on then */

    if (to > 0 && kill(to, sig) == 0)
        passed_on = sig;
}

static void on_alarm(int sig)
{
    (void)sig;	/* only interrupts the flock below */
}

/* N of a whole line "exit N" (1 to 3 digits, at most 255), else -1 (-2: not an exit
 * line at all). The last exit line decides, a bad one meaning none: what
 * zoned.vm.machine._exit_line takes, so an OCI client and `zoned state` agree. */
static int exit_line(const char *line, ssize_t len)
{
    int code = 0;
    ssize_t i;

    if (len > 0 && line[len - 1] == '\n')
        len--;
    if (len < 5 || strncmp(line, "exit ", 5) != 0)
        return -2;
    if (len < 6 || len > 8)
        return -1;
    for (i = 5; i < len; i++) {
        if (line[i] < '0' || line[i] > '9')
            return -1;
        code = code * 10 + (line[i] - '0');
    }
    return code <= 255 ? code : -1;
}

/* The last "exit N" line of the ctl file, or -1; read once zoned-vmlog has written all
 * (it holds ctl locked until then; 5 s at most). zoned-vmlog keeps the file under 64
 * KiB, so a line read whole is bounded. */
static int guest_status(const char *path)
{
    FILE *f = fopen(path, "r");
    struct sigaction sa;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int code = -1, n;

    if (!f)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    alarm(5);
    flock(fileno(f), LOCK_SH);
    alarm(0);
    while ((len = getline(&line, &cap, f)) >= 0)
        if ((n = exit_line(line, len)) != -2)
            code = n;
    free(line);
    fclose(f);
    return code;
}

/* Waits for the go byte on fd; 0 once it came, -1 on EOF or an error. */
static int wait_go(int fd)
{
    char c;
    ssize_t n;

    do
        n = read(fd, &c, 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    return n == 1 ? 0 : -1;
}

static void write_status(int fd, int status)
{
    char buf[32];
    int n;

    if (fd < 0)
        return;
    if (WIFSIGNALED(status))
        n = snprintf(buf, sizeof(buf), "signal %d\n", WTERMSIG(status));
    else if (passed_on && WEXITSTATUS(status) == 0)  /* QEMU ends cleanly on TERM, INT, HUP */
        n = snprintf(buf, sizeof(buf), "signal %d\n", (int)passed_on);
    else
        n = snprintf(buf, sizeof(buf), "exit %d\n", WEXITSTATUS(status));
    if (write(fd, buf, (size_t)n) != n)
        return;  /* the reader finds no word: an unknown end, as before */
}

/* Cut this process's capabilities to `keep` for good (see --caps); 0 or -1 (errno). As
 * root's exec gives a program the bounding set, the bounding set is what is cut. */
static int keep_only_caps(unsigned long long keep)
{
    struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    int c, i;

    for (c = 0; c < 64; c++)  /* (EINVAL: past this kernel's last capability) */
        if (!(keep & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 &&
                errno != EINVAL)
            return -1;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        return -1;
    if (syscall(SYS_capget, &head, data) < 0)
        return -1;
    for (i = 0; i < 2; i++) {
        unsigned int k = (unsigned int)(keep >> (32 * i));

        data[i].effective &= k;
        data[i].permitted &= k;
        data[i].inheritable = 0;
    }
    if (syscall(SYS_capset, &head, data) < 0)
        return -1;
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

static void close_from_except(int from, int keep)
{
    if (keep >= from) {
        if (keep > from)
            syscall(SYS_close_range, (unsigned)from, (unsigned)keep - 1, 0U);
        from = keep + 1;
    }
    if (syscall(SYS_close_range, (unsigned)from, ~0U, 0U) < 0)
        for (int fd = from; fd < 1024; fd++)
            if (fd != keep)
                close(fd);
}

int main(int argc, char **argv)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
    struct sigaction sa;
    siginfo_t end;
    pid_t parent;
    int status, code, go = -1, status_fd = -1, arg = 1, cut_caps = 0;
    unsigned long long caps = 0;
    char *end_of_caps;
    size_t i;

    for (; arg + 1 < argc && strncmp(argv[arg], "--", 2) == 0; arg += 2) {
        if (strcmp(argv[arg], "--go") == 0) {
            go = atoi(argv[arg + 1]);
        } else if (strcmp(argv[arg], "--caps") == 0) {
            errno = 0;
            caps = strtoull(argv[arg + 1], &end_of_caps, 16);
            if (errno || *end_of_caps || end_of_caps == argv[arg + 1]) {
                fprintf(stderr, "zoned-vmwrap: --caps: not a hex mask: %s\n", argv[arg + 1]);
                return 125;
            }
            cut_caps = 1;
        } else if (strcmp(argv[arg], "--status") == 0) {
            status_fd = open(argv[arg + 1], O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW |
                             O_CLOEXEC, 0600);
            if (status_fd < 0 || flock(status_fd, LOCK_EX) < 0) {
                perror("zoned-vmwrap: status file");
                return 125;
            }
        } else {
            break;
        }
    }
    if (argc - arg < 2) {
        fprintf(stderr, "usage: zoned-vmwrap [--go FD] [--status FILE] [--caps HEX] "
                "CTL_PATH QEMU ARGS...\n");
        return 125;
    }
    if (go >= 0 && wait_go(go) < 0)
        return 125;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = forward;
    for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &sa, NULL);
    parent = getpid();
    child = fork();
    if (child < 0)
        return 125;
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);  /* QEMU never outlives its wrapper */
        if (getppid() != parent)  /* (it died before that took hold) */
            _exit(125);
        sa.sa_handler = SIG_DFL;
        for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
            sigaction(sigs[i], &sa, NULL);
        if (cut_caps && keep_only_caps(caps) < 0) {
            perror("zoned-vmwrap: dropping QEMU's capabilities");
            _exit(125);
        }
        execvp(argv[arg + 1], argv + arg + 1);
        _exit(127);
    }
    /* QEMU's pipes to zoned-vmlog must reach EOF when QEMU exits: no copy kept here */
    close_from_except(3, status_fd);
    /* Wait for QEMU's end without reaping it: while it is a zombie its pid cannot be
     * anyone else's, and from here no signal is passed on (nor taken for its end). */
    while (waitid(P_PID, (id_t)child, &end, WEXITED | WNOWAIT) < 0)
        if (errno != EINTR)
            return 125;
    child = 0;
    while (waitpid(end.si_pid, &status, 0) < 0)
        if (errno != EINTR)
            return 125;
    code = guest_status(argv[arg]);
    write_status(status_fd, status);
    if (code >= 0)
        return code & 0xff;
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status) ? WEXITSTATUS(status) : 255;
}
