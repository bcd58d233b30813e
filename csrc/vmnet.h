/*
 * zoned-vminit's network set-up: IPv4 address, netmask, link up and default route with the
 * classic ioctls (no netlink code needed for that much), NICs found by MAC. Part of
 * zoned-vminit: included once by csrc/vminit.c, after its helpers (fatal, records).
 */

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
