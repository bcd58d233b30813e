/* An NSS module a hostile zone plants for `zoned cp` (tests/test_escape_cp.py): were the
 * copy's zone side to look up a user or group name, glibc would read the zone's
 * nsswitch.conf ("passwd: probe") and load this library; its constructor leaves a mark in
 * whatever root that process has, with the capabilities it ran with. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

__attribute__((constructor)) static void probe(void) {
    char status[4096] = "";
    int fd = open("/proc/self/status", O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, status, sizeof status - 1);
        status[n > 0 ? n : 0] = 0;
        close(fd);
    }
    FILE *f = fopen("/nss-ran", "w");
    if (f) {
        fprintf(f, "uid=%d pid=%d\n%s", getuid(), getpid(), status);
        fclose(f);
    }
}

int _nss_probe_getpwuid_r(void) { return 0; } /* NSS_STATUS_NOTFOUND */
int _nss_probe_getgrgid_r(void) { return 0; }
