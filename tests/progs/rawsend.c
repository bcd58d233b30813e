/* rawsend: forge one Ethernet frame from inside a zone, as a zone with CAP_NET_RAW can.
 *
 *   rawsend IFACE udp DST_MAC SRC_MAC SRC_IP DST_IP DPORT PAYLOAD
 *       an IPv4/UDP datagram with any source MAC and address (source port 40000)
 *   rawsend IFACE arp DST_MAC SRC_MAC SENDER_IP TARGET_IP
 *       an ARP reply: "SENDER_IP is at SRC_MAC", addressed to TARGET_IP at DST_MAC
 *
 * It needs only an AF_PACKET socket: no routing, no addresses of its own. Built static
 * (the busybox image has no libc) and bind-mounted into the zone by the tests.
 */
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void mac(const char *s, uint8_t out[6]) {
    unsigned v[6];
    if (sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6) {
        fprintf(stderr, "rawsend: bad MAC %s\n", s);
        exit(2);
    }
    for (int i = 0; i < 6; i++) out[i] = (uint8_t)v[i];
}

static uint32_t ip4(const char *s) {
    struct in_addr a;
    if (inet_pton(AF_INET, s, &a) != 1) {
        fprintf(stderr, "rawsend: bad address %s\n", s);
        exit(2);
    }
    return a.s_addr;
}

static uint16_t csum(const void *data, size_t len) {
    const uint8_t *p = data;
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < len; i += 2) sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (len & 1) sum += (uint32_t)(p[len - 1] << 8);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return htons((uint16_t)~sum);
}

int main(int argc, char **argv) {
    uint8_t f[1514];
    size_t n;
    if (argc < 3) {
        fprintf(stderr, "usage: rawsend IFACE udp|arp ...\n");
        return 2;
    }
    memset(f, 0, sizeof f);
    if (!strcmp(argv[2], "udp") && argc == 9) {
        const char *payload = argv[8];
        size_t plen = strlen(payload);
        uint32_t src = ip4(argv[5]), dst = ip4(argv[6]);
        mac(argv[3], f);
        mac(argv[4], f + 6);
        f[12] = 0x08, f[13] = 0x00;
        uint8_t *ip = f + 14, *udp = ip + 20;
        ip[0] = 0x45;
        *(uint16_t *)(ip + 2) = htons((uint16_t)(20 + 8 + plen));
        ip[8] = 64;
        ip[9] = 17;
        memcpy(ip + 12, &src, 4);
        memcpy(ip + 16, &dst, 4);
        *(uint16_t *)(ip + 10) = csum(ip, 20);
        *(uint16_t *)(udp + 0) = htons(40000);
        *(uint16_t *)(udp + 2) = htons((uint16_t)atoi(argv[7]));
        *(uint16_t *)(udp + 4) = htons((uint16_t)(8 + plen));  /* checksum 0: none */
        memcpy(udp + 8, payload, plen);
        n = 14 + 20 + 8 + plen;
    } else if (!strcmp(argv[2], "arp") && argc == 7) {
        uint32_t sip = ip4(argv[5]), tip = ip4(argv[6]);
        mac(argv[3], f);
        mac(argv[4], f + 6);
        f[12] = 0x08, f[13] = 0x06;
        uint8_t *a = f + 14;
        a[0] = 0, a[1] = 1, a[2] = 0x08, a[3] = 0, a[4] = 6, a[5] = 4, a[6] = 0, a[7] = 2;
        memcpy(a + 8, f + 6, 6);
        memcpy(a + 14, &sip, 4);
        memcpy(a + 18, f, 6);
        memcpy(a + 24, &tip, 4);
        n = 60;
    } else {
        fprintf(stderr, "usage: rawsend IFACE udp|arp ...\n");
        return 2;
    }
    int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (s < 0) {
        perror("rawsend: socket");
        return 1;
    }
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_ifindex = (int)if_nametoindex(argv[1]);
    sll.sll_halen = 6;
    memcpy(sll.sll_addr, f, 6);
    if (!sll.sll_ifindex) {
        perror("rawsend: if_nametoindex");
        return 1;
    }
    if (n < 60) n = 60;
    for (int i = 0; i < 3; i++) {  /* three copies: one lost frame must not fake a pass */
        if (sendto(s, f, n, 0, (struct sockaddr *)&sll, sizeof sll) != (ssize_t)n) {
            perror("rawsend: sendto");
            return 1;
        }
        usleep(20000);
    }
    return 0;
}
