"""The code between fork and exec of a zone's process, in the order it runs:

  process   the forked child's stages (namespaces, user namespace stage, console, ready,
            start), fork_nondumpable and the exec helper's spawn
  sync      the typed messages of the parent <-> child sync socket (errno kept)
  rootfs    the rootfs: overlay, mounts, devices, masked paths, pivot_root
  inroot    path resolution inside a rootfs, fd by fd (openat2 RESOLVE_IN_ROOT/BENEATH)
  security  capabilities, rlimits, no_new_privs, user/group switch
  seccomp   compiling profiles to BPF (in the parent; the C exec step loads them)
  initstub  whether a container's init may wait for start as the sealed zoned-spawn copy

The parent side (zoned.runtime) imports these; nothing here imports zoned.runtime.
"""
