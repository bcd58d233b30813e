"""cffi builder for zoned._native (API mode, compiled at install time)."""
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

ffibuilder = FFI()
# zoned.h: the wrappers (also compiled into zoned-spawn); constants.cdef: the constants they
# take, valued from the headers below at compile time; primer.h: the cgroup-move primer's
# loop and exitlend.h: the CLI's exit (the extension's only, not zoned-spawn's); initplan.h:
# the ops of the C init's plan (zoned.child.initplan writes it, zoned-spawn runs it).
ffibuilder.cdef((HERE / "zoned.h").read_text() + (HERE / "constants.cdef").read_text()
                + (HERE / "initplan.h").read_text()
                + (HERE / "primer.h").read_text() + (HERE / "exitlend.h").read_text())
ffibuilder.set_source(
    "zoned._native",
    '#include "zoned.h"\n#include "initplan.h"\n' + (HERE / "zoned.c").read_text()
    + (HERE / "forkexec.c").read_text() + (HERE / "primer.c").read_text()
    + (HERE / "exitlend.c").read_text()
    + "#include <linux/magic.h>\n#include <linux/openat2.h>\n",
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
