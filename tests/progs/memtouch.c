/* memtouch: a process whose memory and TCP state a migration must carry over intact.
 *
 *   memtouch MIB [PORT [DIRTY]]
 *
 * Allocates MIB MiB and fills every 64-bit word from a deterministic PRNG keyed by (page,
 * generation), so every page is touched and none is all zeros (no zero-page shortcut in a
 * dump). Prints "ready <checksum>" (FNV-1a over the buffer's words, 16 hex digits).
 *
 * With PORT: a TCP server on 0.0.0.0:PORT, one poll loop, any number of clients. Per line:
 *   next    -> "<n>"         one process-wide counter, 1, 2, 3, ...
 *   sum     -> "<hex>"       the checksum recomputed over the buffer now
 *   verify  -> "ok <pages>"  or "bad <first page> <count>": every page holds what its
 *                            recorded generation says it should
 *   pid     -> "<getpid()>"
 * With DIRTY (MiB/s, default 0), pages are rewritten round-robin with a new generation at
 * that rate (every 10 ms), so a pre-copy never converges by itself; `verify` still holds.
 * Without PORT it waits in sigsuspend(). SIGUSR1 in both modes prints "sum <hex>"; SIGTERM
 * and SIGINT exit 0 (needed as a container's PID 1, which has no default actions).
 *
 * One plain process, no threads: CRIU-friendly. Built with gcc -static -O2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define WORDS (PAGE / 8)
#define MAXC 1024
#define LINE 128

static uint64_t *buf;
static uint32_t *gen;           /* generation of each page */
static size_t pages;
static volatile sig_atomic_t got_usr1, got_term;

static uint64_t splitmix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* page p, generation g: an xorshift64 stream seeded from (p, g); never zero */
static void fill_page(size_t p)
{
    uint64_t s = splitmix(((uint64_t)p << 32) ^ gen[p] ^ 0x6d656d746f756368ULL) | 1;
    uint64_t *w = buf + p * WORDS;
    for (int i = 0; i < WORDS; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        w[i] = s;
    }
}

static int page_ok(size_t p)
{
    uint64_t s = splitmix(((uint64_t)p << 32) ^ gen[p] ^ 0x6d656d746f756368ULL) | 1;
    const uint64_t *w = buf + p * WORDS;
    for (int i = 0; i < WORDS; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        if (w[i] != s)
            return 0;
    }
    return 1;
}

static uint64_t checksum(void)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < pages * WORDS; i++) {
        h ^= buf[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        got_usr1 = 1;
    else
        got_term = 1;
}

static void handle_signals(void)
{
    if (got_term)
        exit(0);
    if (got_usr1) {
        got_usr1 = 0;
        printf("sum %016llx\n", (unsigned long long)checksum());
        fflush(stdout);
    }
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct client {
    int fd;
    size_t len;
    char line[LINE];
};

static void reply(struct client *c, const char *cmd)
{
    static uint64_t counter;
    char out[64];
    if (!strcmp(cmd, "next")) {
        snprintf(out, sizeof out, "%llu\n", (unsigned long long)++counter);
    } else if (!strcmp(cmd, "sum")) {
        snprintf(out, sizeof out, "%016llx\n", (unsigned long long)checksum());
    } else if (!strcmp(cmd, "verify")) {
        size_t bad = 0, first = 0;
        for (size_t p = 0; p < pages; p++)
            if (!page_ok(p) && !bad++)
                first = p;
        if (bad)
            snprintf(out, sizeof out, "bad %zu %zu\n", first, bad);
        else
            snprintf(out, sizeof out, "ok %zu\n", pages);
    } else if (!strcmp(cmd, "pid")) {
        snprintf(out, sizeof out, "%d\n", (int)getpid());
    } else {
        snprintf(out, sizeof out, "error unknown command\n");
    }
    /* replies are tiny: a client whose socket buffer is full is not reading; drop it */
    if (send(c->fd, out, strlen(out), MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)strlen(out)) {
        close(c->fd);
        c->fd = -1;
    }
}

/* -> 0 when the client is gone */
static int serve(struct client *c)
{
    char tmp[512];
    ssize_t n = recv(c->fd, tmp, sizeof tmp, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 1;
    if (n <= 0)
        return 0;
    for (ssize_t i = 0; i < n && c->fd >= 0; i++) {
        char ch = tmp[i];
        if (ch == '\n') {
            if (c->len && c->line[c->len - 1] == '\r')
                c->len--;
            c->line[c->len] = 0;
            c->len = 0;
            reply(c, c->line);
        } else if (c->len < LINE - 1) {
            c->line[c->len++] = ch;
        }
    }
    return c->fd >= 0;
}

static int listen_on(int port)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 128)) {
        perror("memtouch: listen");
        exit(1);
    }
    return s;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: memtouch MIB [PORT [DIRTY_MIB_PER_S]]\n");
        return 2;
    }
    size_t mib = strtoull(argv[1], NULL, 10);
    int port = argc > 2 ? atoi(argv[2]) : 0;
    double dirty = argc > 3 ? atof(argv[3]) : 0;

    pages = mib * (1 << 20) / PAGE;
    buf = malloc(pages * PAGE);
    gen = calloc(pages ? pages : 1, sizeof *gen);
    if (!buf || !gen) {
        perror("memtouch: malloc");
        return 1;
    }
    for (size_t p = 0; p < pages; p++)
        fill_page(p);

    /* signals are only delivered inside ppoll/sigsuspend: no lost wake-ups */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &old);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int lfd = port ? listen_on(port) : -1;
    printf("ready %016llx\n", (unsigned long long)checksum());
    fflush(stdout);

    if (!port) {
        for (;;) {
            sigsuspend(&old);
            handle_signals();
        }
    }

    static struct client cl[MAXC];
    static struct pollfd pfd[MAXC + 1];
    int nc = 0;
    size_t cursor = 0;
    double per_tick = dirty * (1 << 20) / PAGE / 100.0, owed = 0, next_tick = now() + 0.01;
    for (;;) {
        pfd[0] = (struct pollfd){.fd = lfd, .events = nc < MAXC ? POLLIN : 0};
        for (int i = 0; i < nc; i++)
            pfd[i + 1] = (struct pollfd){.fd = cl[i].fd, .events = POLLIN};
        struct timespec ts, *tsp = NULL;
        if (per_tick > 0 && pages) {
            double wait = next_tick - now();
            if (wait < 0)
                wait = 0;
            ts.tv_sec = (time_t)wait;
            ts.tv_nsec = (long)((wait - ts.tv_sec) * 1e9);
            tsp = &ts;
        }
        int r = ppoll(pfd, nc + 1, tsp, &old);
        handle_signals();
        if (per_tick > 0 && pages && now() >= next_tick) {
            for (owed += per_tick; owed >= 1; owed--) {
                gen[cursor]++;
                fill_page(cursor);
                cursor = (cursor + 1) % pages;
            }
            next_tick += 0.01;
            if (next_tick < now())
                next_tick = now() + 0.01;   /* after a freeze: no catch-up burst */
        }
        if (r <= 0)
            continue;
        for (int i = 0; i < nc; i++) {
            if (pfd[i + 1].revents && !serve(&cl[i])) {
                if (cl[i].fd >= 0)
                    close(cl[i].fd);
                cl[i].fd = -1;
            }
        }
        int k = 0;                      /* compact: keep the live clients, in order */
        for (int i = 0; i < nc; i++)
            if (cl[i].fd >= 0)
                cl[k++] = cl[i];
        nc = k;
        if (pfd[0].revents & POLLIN) {
            int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd >= 0) {
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                cl[nc++] = (struct client){.fd = fd};
            }
        }
    }
}
