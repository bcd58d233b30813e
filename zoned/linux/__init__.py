"""zoned's thin layer over the Linux kernel: syscall wrappers and the constants they take
(from the C headers, through the cffi extension), the one /proc/PID/mountinfo parser, and
/proc helpers. No policy and no container concepts here; empty so that importing one
module (syscalls is on `zoned run`'s start path) loads nothing else.
"""
