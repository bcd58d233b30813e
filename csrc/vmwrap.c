/*
 * zoned-vmwrap: the process an OCI client (podman's conmon, containerd's shim) sees as a
 * VM container's init. It runs QEMU as its child and exits with the *guest's* exit code,
 * which the guest's init wrote to the VM's ctl file ("exit N"): QEMU itself exits 0 when
 * the guest ends, whatever the container's process returned.
 *
 *   zoned-vmwrap CTL_PATH QEMU ARGS...
 *
 * The ctl file is written by zoned-vmlog from a pipe QEMU writes (zoned/vm/vmlog.py): this
 * process closes its own copies of QEMU's fds once QEMU runs, and after QEMU's exit waits
 * for zoned-vmlog's lock on ctl, so the guest's last line is read once it is written.
 *
 * TERM, INT, HUP, QUIT, USR1 and USR2 are passed on to QEMU. If QEMU ends without the
 * guest having reported (a crash, SIGKILL), the exit status is 128+signal or QEMU's own.
 * Static and tiny: one per VM started through the OCI CLI.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile pid_t child;

static void forward(int sig)
{
    if (child > 0)
        kill(child, sig);
}

static void on_alarm(int sig)
{
    (void)sig;	/* only interrupts the flock below */
}

/* The last "exit N" line of the ctl file, or -1; read once zoned-vmlog has written all
 * (it holds ctl locked until then; 5 s at most). */
static int guest_status(const char *path)
{
    char buf[4096];
    FILE *f = fopen(path, "r");
    struct sigaction sa;
    int code = -1;

    if (!f)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    alarm(5);
    flock(fileno(f), LOCK_SH);
    alarm(0);
    while (fgets(buf, sizeof(buf), f))
        if (strncmp(buf, "exit ", 5) == 0)
            code = atoi(buf + 5);
    fclose(f);
    return code;
}

int main(int argc, char **argv)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
    struct sigaction sa;
    int status, code;
    size_t i;

    if (argc < 3) {
        fprintf(stderr, "usage: zoned-vmwrap CTL_PATH QEMU ARGS...\n");
        return 125;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = forward;
    for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &sa, NULL);
    child = fork();
    if (child < 0)
        return 125;
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);  /* QEMU never outlives its wrapper */
        sa.sa_handler = SIG_DFL;
        for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
            sigaction(sigs[i], &sa, NULL);
        execvp(argv[2], argv + 2);
        _exit(127);
    }
    /* QEMU's pipes to zoned-vmlog must reach EOF when QEMU exits: no copy kept here */
    if (syscall(SYS_close_range, 3U, ~0U, 0U) < 0)
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
    while (waitpid(child, &status, 0) < 0)
        if (errno != EINTR)
            return 125;
    code = guest_status(argv[1]);
    if (code >= 0)
        return code & 0xff;
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status) ? WEXITSTATUS(status) : 255;
}
