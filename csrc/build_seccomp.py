"""Placeholder; replaced by the seccomp work."""
from cffi import FFI
ffibuilder = FFI()
ffibuilder.cdef("int seccomp_api_get(void);")
ffibuilder.set_source("zoned._seccomp", "#include <seccomp.h>", libraries=["seccomp"])
