"""Local images: read-only root filesystems built from YAML recipes, never pulled.

  store    the image store: look-up (on `zoned run`'s start path, so cheap imports only),
           list, remove, prune, the build transaction
  recipes  the YAML recipe format, building a rootfs from one, exporting an image (imported
           only by build and export: dataclasses, pathlib, subprocess, tarfile)
  errors   ImageError and ImageNotFound (ZonedErrors), and what an image name may be

This file imports nothing: import the module you need.
"""
