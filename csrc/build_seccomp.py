"""cffi (API mode) builder for zoned._seccomp: a thin binding of libseccomp's <seccomp.h>.

Only what zoned.seccomp needs to turn an OCI `linux.seccomp` object into a BPF program:
build a filter context, add arches and rules, set attributes, export the BPF. All policy
(which rules, which actions, caching) lives in zoned/seccomp.py. The container child never
imports this module; it only loads the exported bytes with seccomp(2).
"""
from cffi import FFI

ffibuilder = FFI()

ffibuilder.cdef(r"""
typedef void *scmp_filter_ctx;
typedef uint64_t scmp_datum_t;

enum scmp_filter_attr {
    SCMP_FLTATR_ACT_DEFAULT,
    SCMP_FLTATR_ACT_BADARCH,
    SCMP_FLTATR_CTL_NNP,
    SCMP_FLTATR_CTL_TSYNC,
    SCMP_FLTATR_API_TSKIP,
    SCMP_FLTATR_CTL_LOG,
    SCMP_FLTATR_CTL_SSB,
    SCMP_FLTATR_CTL_OPTIMIZE,
    SCMP_FLTATR_API_SYSRAWRC,
    ...
};

enum scmp_compare {
    SCMP_CMP_NE,
    SCMP_CMP_LT,
    SCMP_CMP_LE,
    SCMP_CMP_EQ,
    SCMP_CMP_GE,
    SCMP_CMP_GT,
    SCMP_CMP_MASKED_EQ,
    ...
};

struct scmp_arg_cmp {
    unsigned int arg;
    enum scmp_compare op;
    scmp_datum_t datum_a;
    scmp_datum_t datum_b;
};

struct scmp_version {
    unsigned int major;
    unsigned int minor;
    unsigned int micro;
};

#define SCMP_ACT_KILL_PROCESS ...
#define SCMP_ACT_KILL_THREAD ...
#define SCMP_ACT_KILL ...
#define SCMP_ACT_TRAP ...
#define SCMP_ACT_NOTIFY ...
#define SCMP_ACT_LOG ...
#define SCMP_ACT_ALLOW ...
#define __NR_SCMP_ERROR ...

const struct scmp_version *seccomp_version(void);
unsigned int seccomp_api_get(void);

scmp_filter_ctx seccomp_init(uint32_t def_action);
void seccomp_release(scmp_filter_ctx ctx);

uint32_t seccomp_arch_resolve_name(const char *arch_name);
uint32_t seccomp_arch_native(void);
int seccomp_arch_add(scmp_filter_ctx ctx, uint32_t arch_token);

int seccomp_attr_set(scmp_filter_ctx ctx, enum scmp_filter_attr attr, uint32_t value);

int seccomp_syscall_resolve_name(const char *name);

int seccomp_rule_add_array(scmp_filter_ctx ctx, uint32_t action, int syscall,
                           unsigned int arg_cnt, const struct scmp_arg_cmp *arg_array);

int seccomp_export_bpf(const scmp_filter_ctx ctx, int fd);

/* function-like macros of <seccomp.h>, as functions */
uint32_t zs_act_errno(uint32_t err);
uint32_t zs_act_trace(uint32_t msg);
""")

ffibuilder.set_source(
    "zoned._seccomp",
    r"""
#include <seccomp.h>

static uint32_t zs_act_errno(uint32_t err) { return SCMP_ACT_ERRNO(err); }
static uint32_t zs_act_trace(uint32_t msg) { return SCMP_ACT_TRACE(msg); }
""",
    libraries=["seccomp"],
    extra_compile_args=["-O2", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
