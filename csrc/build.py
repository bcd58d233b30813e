"""cffi builder for zoned._native (API mode, compiled at install time)."""
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef((HERE / "zoned.h").read_text())
ffibuilder.set_source(
    "zoned._native",
    '#include "zoned.h"\n' + (HERE / "zoned.c").read_text(),
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
