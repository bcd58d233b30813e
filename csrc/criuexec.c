/*
 * zoned-criuexec: run criu in a private mount namespace set up for it, without a
 * preexec_fn in Python (zoned/checkpoint/criu.py says why criu needs each mount).
 *
 *   zoned-criuexec [--overlay TARGET OPTIONS | --bind SOURCE TARGET] [--kdat CACHE KDAT]
 *                  [--yard DIR NAME=MOUNTPOINT ...] -- CRIU ARGS...
 *
 * In order: unshare the mount namespace and make it a slave of the host's (nothing
 * mounted here reaches the host); mount an overlay (OPTIONS: lowerdir=,upperdir=,
 * workdir=) on TARGET, or bind SOURCE there with what is mounted below it (an OCI
 * bundle's rootfs: criu's --root must be a mount point, as runc's criu-root is), or exit
 * 125 saying why; bind the kdat cache file CACHE over KDAT
 * (created empty first, as CRIU's own run would); mount a tmpfs at DIR with each
 * MOUNTPOINT bound at DIR/NAME (the cgroup yard); then exec CRIU. The kdat and the yard
 * are best effort: without them criu probes the kernel itself, or cannot open the yard
 * and says so.
 *
 * Why a program: a Python preexec_fn makes subprocess fork the whole interpreter
 * (~2.7 ms from a 27 MiB relocation server) instead of vfork. A live migration runs
 * three criu processes inside its frozen window. Static and tiny; root only (the caller
 * is zoned, as root: checkpoint and migration need it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static void die(const char *what, const char *arg)
{
    fprintf(stderr, "zoned-criuexec: %s %s: %s\n", what, arg ? arg : "", strerror(errno));
    exit(125);
}

int main(int argc, char **argv)
{
    const char *overlay_target = NULL, *overlay_opts = NULL;
    const char *bind_source = NULL, *bind_target = NULL;
    const char *kdat_cache = NULL, *kdat = NULL, *yard = NULL;
    char **yard_parts = NULL;
    int nyard = 0, i = 1;

    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (!strcmp(argv[i], "--overlay") && i + 2 < argc) {
            overlay_target = argv[++i];
            overlay_opts = argv[++i];
        } else if (!strcmp(argv[i], "--bind") && i + 2 < argc) {
            bind_source = argv[++i];
            bind_target = argv[++i];
        } else if (!strcmp(argv[i], "--kdat") && i + 2 < argc) {
            kdat_cache = argv[++i];
            kdat = argv[++i];
        } else if (!strcmp(argv[i], "--yard") && i + 1 < argc) {
            yard = argv[++i];
            yard_parts = &argv[i + 1];
            while (i + 1 < argc && strchr(argv[i + 1], '=') && strncmp(argv[i + 1], "--", 2)) {
                i++;
                nyard++;
            }
        } else {
            fprintf(stderr, "zoned-criuexec: unknown argument %s\n", argv[i]);
            return 125;
        }
    }
    if (i + 1 >= argc) {
        fprintf(stderr, "usage: zoned-criuexec [--overlay T O | --bind S T] [--kdat C K] "
                        "[--yard DIR NAME=MOUNT ...] -- CRIU ARGS...\n");
        return 125;
    }

    if (unshare(CLONE_NEWNS) < 0)
        die("unshare", "CLONE_NEWNS");
    if (mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) < 0)
        die("make / a slave", NULL);
    if (overlay_target && mount("overlay", overlay_target, "overlay", 0, overlay_opts) < 0)
        die("mount overlay on", overlay_target);
    if (bind_source && mount(bind_source, bind_target, NULL, MS_BIND | MS_REC, NULL) < 0)
        die("bind the root on", bind_target);
    if (kdat_cache) {
        /* Another criu (not zoned's) may have found the empty mount point stale and
         * removed it: make it again right before the bind. */
        int fd = open(kdat, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) {
            close(fd);
            mount(kdat_cache, kdat, NULL, MS_BIND, NULL);
        }
    }
    if (yard && mount("zoned-criu-yard", yard, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                      "mode=700") == 0) {
        for (int k = 0; k < nyard; k++) {
            char *eq = strchr(yard_parts[k], '='), path[4096];
            *eq = '\0';
            if (snprintf(path, sizeof(path), "%s/%s", yard, yard_parts[k]) >= (int)sizeof(path))
                break;
            if (mkdir(path, 0700) < 0 || mount(eq + 1, path, NULL, MS_BIND, NULL) < 0)
                break;
        }
    }
    execv(argv[i + 1], &argv[i + 1]);
    die("exec", argv[i + 1]);
    return 125;
}
