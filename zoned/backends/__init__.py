"""The seam between the front ends (zoned.api, the CLI) and what runs a container.

  base  Backend: the operations every backend provides (create, start, kill, delete,
        state, exec, attach network, checkpoint), each with its contract
  zone  ZoneBackend: an OS-level zone on this kernel (namespaces, cgroups, pivot_root),
        by way of zoned.runtime, zoned.network and zoned.checkpoint

A VM backend implements the same Backend next. This file imports nothing.
"""
