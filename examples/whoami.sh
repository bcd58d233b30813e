#!/bin/sh
# What `make demo` runs inside a zone: who and where it is, seen from inside.
limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)
pids=$(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max)
echo "I am $(id -un) (uid $(id -u)) on host '$(hostname)', PID $$ of my own pid namespace."
echo "My root is an overlay of the busybox image: $(echo $(ls /))"
echo "Processes I can see: $(echo $(ps -o pid,comm | tail -n +2))"
echo "Network interfaces: $(echo $(ls /sys/class/net))"
echo "Limits: memory $((limit / 1048576)) MiB, pids $pids"
echo "Capabilities: $(grep CapEff /proc/self/status | cut -f2), no_new_privs $(grep NoNewPrivs /proc/self/status | cut -f2), seccomp mode $(grep '^Seccomp:' /proc/self/status | cut -f2)"
echo "Masked: /proc/keys has $(wc -c < /proc/keys) bytes; /proc/sys is $( (echo x > /proc/sys/kernel/domainname) 2>/dev/null && echo writable || echo read-only)"
