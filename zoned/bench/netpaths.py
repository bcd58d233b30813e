"""TCP throughput and round-trip latency over network paths, each measured the same way:
server and client are host programs run in the network namespaces of the path's ends
(`nsenter --net=/proc/PID/ns/net`, only the network namespace, so the path measured is
exactly the container's). Throughput: iperf3, one TCP stream; round trip: a Python client
sends 1 byte and waits for the 1-byte answer over one TCP connection (TCP_NODELAY), both
ends pinned to CPU 0 (on different CPUs the numbers swing 10x with a VM's idle vCPUs).
Paths are measured round-robin, the starting path rotated every round.

Moved here from bench/network.py, which now drives this class for its own paths."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

from zoned.bench.stats import summary

PY = sys.executable
IPERF_PORT = 5201
RTT_PORT = 5301

RTT_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        b = c.recv(1)
        if not b: break
        c.sendall(b)
    c.close()
"""

RTT_CLIENT = r"""
import socket, sys, time, json
n = int(sys.argv[3])
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for _ in range(200): c.sendall(b"x"); c.recv(1)
out = []
for _ in range(n):
    t = time.perf_counter_ns(); c.sendall(b"x"); c.recv(1); out.append(time.perf_counter_ns() - t)
print(json.dumps(out))
"""


# The same servers in a zone and in a VM (busybox's nc: a guest has no iperf3): a sink
# for throughput, an echo (cat) for round trips.
NC_SERVERS = ("while :; do nc -l -p {sink} >/dev/null; done & "
              "nc -ll -p {echo} -e cat")

SEND_CLIENT = r"""
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
buf = b"\0" * (1 << 16); n = 0; end = time.perf_counter() + float(sys.argv[3])
t0 = time.perf_counter()
while time.perf_counter() < end:
    n += c.send(buf)
c.shutdown(socket.SHUT_WR); c.recv(1)  # the sink has read it all when it closes
print(n * 8 / (time.perf_counter() - t0) / 1e9)
"""


class NetFailure(Exception):
    pass


class Paths:
    """Containers on zoned networks under one state root, and the servers and clients that
    measure paths between them. A path is (label, server, client, address, iperf3 port,
    round-trip port); server/client None = the host."""

    def __init__(self, zoned: str, root: str, env: dict | None = None, seconds: int = 4,
                 repeat: int = 3, rtts: int = 5000):
        self.zoned, self.root = zoned, root
        self.env = env if env is not None else dict(os.environ)
        self.seconds, self.repeat, self.rtts = seconds, repeat, rtts
        self.procs: list[subprocess.Popen] = []

    def z(self, *a, check=True) -> subprocess.CompletedProcess:
        p = subprocess.run([self.zoned, "--root", self.root, *a], capture_output=True,
                           text=True, env=self.env, timeout=120, stdin=subprocess.DEVNULL)
        if check and p.returncode:
            raise NetFailure(f"zoned {' '.join(a)}: {p.stderr.strip()}")
        return p

    def container(self, name: str, *net_args: str) -> dict:
        """A zone holding a network namespace (busybox sleep): name, pid, ip."""
        self.z("run", "-d", "--name", name, *net_args, "--", "sleep", "3600")
        info = json.loads(self.z("inspect", name).stdout)
        addrs = (info.get("network") or {}).get("addresses") or [{}]
        return {"name": name, "pid": info["state"]["pid"], "ip": addrs[0].get("ip")}

    def nc_container(self, name: str, *run_args: str) -> dict:
        """A zone (or, with --backend vm in run_args, a VM) serving NC_SERVERS."""
        self.z("run", "-d", "--name", name, *run_args, "--", "sh", "-c",
               NC_SERVERS.format(sink=IPERF_PORT + 1, echo=RTT_PORT + 1))
        info = json.loads(self.z("inspect", name).stdout)
        addrs = (info.get("network") or {}).get("addresses") or [{}]
        return {"name": name, "pid": info["state"]["pid"], "ip": addrs[0].get("ip")}

    def measure_nc(self, paths, progress: Callable[[str], None] | None = None) -> dict:
        """Like measure(), with the NC_SERVERS on the server side and Python clients: a
        method a VM's guest can serve, applied to zones and VMs alike. paths: (label,
        client, address)."""
        progress = progress or (lambda s: print(s, file=sys.stderr, flush=True))
        for _label, client, addr in paths:
            wait_port(self.ns(client), addr, IPERF_PORT + 1, timeout=60)
            wait_port(self.ns(client), addr, RTT_PORT + 1, timeout=60)
        tp: dict[str, list[float]] = {p[0]: [] for p in paths}
        rt: dict[str, list[float]] = {p[0]: [] for p in paths}
        rounds = max(self.repeat, 3)
        for r in range(rounds):
            order = paths[r % len(paths):] + paths[:r % len(paths)]
            for label, client, addr in order:
                progress(f"  round {r + 1}/{rounds}: {label} (nc)")
                if r < self.repeat:
                    out = subprocess.run([*self.ns(client), "taskset", "-c", "0", PY, "-c",
                                          SEND_CLIENT, addr, str(IPERF_PORT + 1),
                                          str(self.seconds)],
                                         capture_output=True, text=True, timeout=120)
                    if out.returncode:
                        raise NetFailure(f"sending to {addr}: {out.stderr.strip()[-300:]}")
                    tp[label].append(float(out.stdout))
                rt[label] += self.rtt(client, addr, RTT_PORT + 1, self.rtts // rounds // 4)
        return {label: {"throughput": {"gbit_s": summary(tp[label]), "samples": tp[label]},
                        "rtt": {"us": summary(rt[label]),
                                "samples": [round(x, 2) for x in rt[label]]}}
                for label in tp}

    @staticmethod
    def ns(c: dict | None) -> list[str]:
        return [] if c is None else ["nsenter", f"--net=/proc/{c['pid']}/ns/net"]

    def start_servers(self, paths) -> None:
        """One iperf3 and one round-trip server per namespace that serves a path."""
        done = set()
        for _label, server, _client, _addr, _port, _rport in paths:
            key = None if server is None else server["name"]
            if key in done:
                continue
            done.add(key)
            self.procs.append(subprocess.Popen(
                [*self.ns(server), "iperf3", "-s", "-p", str(IPERF_PORT)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            srv = subprocess.Popen([*self.ns(server), "taskset", "-c", "0", PY, "-c",
                                    RTT_SERVER, "0.0.0.0", str(RTT_PORT)],
                                   stdout=subprocess.PIPE, text=True)
            self.procs.append(srv)
            srv.stdout.readline()
        for _label, _server, client, addr, port, rport in paths:
            wait_port(self.ns(client), addr, port)
            wait_port(self.ns(client), addr, rport)

    def throughput(self, client: dict | None, addr: str, port: int) -> float:
        data: dict = {}
        out = None
        for _ in range(3):  # the server may still be finishing the previous test
            out = subprocess.run([*self.ns(client), "iperf3", "-c", addr, "-p", str(port),
                                  "-t", str(self.seconds), "-J"],
                                 capture_output=True, text=True, timeout=120)
            data = json.loads(out.stdout or "{}")
            if "end" in data and "error" not in data:
                return data["end"]["sum_received"]["bits_per_second"] / 1e9
            time.sleep(0.5)
        raise NetFailure(f"iperf3 to {addr}:{port}: {data.get('error') or out.stderr}")

    def rtt(self, client: dict | None, addr: str, port: int, n: int) -> list[float]:
        out = subprocess.run([*self.ns(client), "taskset", "-c", "0", PY, "-c", RTT_CLIENT,
                              addr, str(port), str(n)], capture_output=True, text=True,
                             timeout=120)
        if out.returncode:
            raise NetFailure(f"round trips to {addr}:{port}: {out.stderr.strip()[-300:]}")
        return [x / 1000 for x in json.loads(out.stdout)]

    def measure(self, paths, progress: Callable[[str], None] | None = None) -> dict:
        """Round-robin over the paths (the starting one rotated every round)."""
        progress = progress or (lambda s: print(s, file=sys.stderr, flush=True))
        self.start_servers(paths)
        tp: dict[str, list[float]] = {p[0]: [] for p in paths}
        rt: dict[str, list[float]] = {p[0]: [] for p in paths}
        rounds = max(self.repeat, 3)
        for r in range(rounds):
            order = paths[r % len(paths):] + paths[:r % len(paths)]
            for label, _server, client, addr, port, rport in order:
                progress(f"  round {r + 1}/{rounds}: {label}")
                if r < self.repeat:
                    tp[label].append(self.throughput(client, addr, port))
                rt[label] += self.rtt(client, addr, rport, self.rtts // rounds)
        return {label: {"throughput": {"gbit_s": summary(tp[label]), "samples": tp[label]},
                        "rtt": {"us": summary(rt[label]),
                                "samples": [round(x, 2) for x in rt[label]]}}
                for label in tp}

    def stop_servers(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.procs = []

    def cleanup(self) -> dict:
        """Servers, containers and networks of this root; the leftovers found."""
        from zoned.bench.leftovers import links_aliased, rmdir_quiet, state_entries

        self.stop_servers()
        ids = self.z("ps", "-a", "-q", check=False).stdout.split()
        if ids:
            self.z("rm", "-f", *ids, check=False)
        nets = self.z("network", "ls", "-q", check=False).stdout.split()
        if nets:
            self.z("network", "rm", *nets, check=False)
        self.z("gc", check=False)
        found = {"state": state_entries(self.root), "links": links_aliased(f"@{self.root}")}
        rmdir_quiet(self.root)
        found["ok"] = not any(found.values())
        return found


def wait_port(prefix: list[str], addr: str, port: int, timeout: float = 10.0) -> None:
    code = ("import socket,sys,time\nend=time.time()+%r\n"
            "while True:\n"
            "    try: socket.create_connection((%r,%d),timeout=1).close(); break\n"
            "    except OSError:\n"
            "        if time.time()>end: sys.exit(1)\n"
            "        time.sleep(0.05)\n" % (timeout, addr, port))
    if subprocess.run([*prefix, PY, "-c", code]).returncode:
        raise NetFailure(f"nothing listens on {addr}:{port} after {timeout:g}s")
