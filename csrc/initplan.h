/* The ops of a container init's set-up plan (zoned/child/initplan.py writes it, csrc/setup.c
 * runs it). Also in the cffi cdef: Python reads them as zoned._native.lib.Z_PLAN_*.
 * A plan: "ZPL" Z_PLAN_VERSION, then records: u32 op, u32 nargs, u32 length, then `length`
 * bytes: nargs NUL-terminated texts (integers in decimal), or for Z_PLAN_PROGRAM (nargs 0)
 * a seccomp program as it is, for the later ops that load it. */
#define Z_PLAN_VERSION 4
#define Z_PLAN_STDIO 1          /* FD0 FD1 FD2: dup2 onto 0, 1, 2 */
#define Z_PLAN_KEEP 2           /* FIRST FD...: every other fd from FIRST on is closed */
#define Z_PLAN_SETNS 3          /* FD NSTYPE: join, then close FD */
#define Z_PLAN_UNSHARE 4        /* FLAGS */
#define Z_PLAN_CHECK_MNTNS 5    /* INO: refuse to go on in the caller's mount namespace */
#define Z_PLAN_WRITE 6          /* PATH DATA CONTEXT: write a file (errors: "CONTEXT: why") */
#define Z_PLAN_LO_UP 7
#define Z_PLAN_NAMESPACES 8     /* ROOTLESS: say "namespaces", wait for "go" */
#define Z_PLAN_HOSTNAME 9       /* NAME */
#define Z_PLAN_DOMAINNAME 10    /* NAME */
#define Z_PLAN_MOUNT 11         /* SOURCE TARGET FSTYPE FLAGS DATA CONTEXT HINT ("": NULL) */
#define Z_PLAN_ROOT 12          /* PATH: the rootfs, every later path is inside it */
#define Z_PLAN_CGROUP_WAIT 13   /* CGROUPNS: wait until in the cgroup; then a cgroup ns? */
#define Z_PLAN_MOUNT_ENTRY 14   /* see setup.c, mount_entry */
#define Z_PLAN_MOUNT_CGROUPS 15 /* see setup.c, mount_cgroups */
#define Z_PLAN_MKNOD 16         /* PATH MODE MAJOR MINOR UID GID CONTEXT */
#define Z_PLAN_DEV_SYMLINKS 17
#define Z_PLAN_EMPTY_TREE 18    /* PATH: the masks' empty directory, cloned now */
#define Z_PLAN_MAKE_CWD 19      /* CWD */
#define Z_PLAN_PIVOT 20         /* PATH NO_PIVOT PROPAGATION */
#define Z_PLAN_MASK 21          /* PATH CONTEXT */
#define Z_PLAN_MASKS_DONE 22
#define Z_PLAN_READONLY 23      /* PATH CONTEXT */
#define Z_PLAN_ROOT_READONLY 24
#define Z_PLAN_CHDIR 25         /* CWD */
#define Z_PLAN_SETSID 26
#define Z_PLAN_PERSONALITY 27   /* PERSONA */
#define Z_PLAN_RLIMIT 28        /* RESOURCE SOFT HARD CONTEXT */
#define Z_PLAN_LOOKUP 29        /* COMMAND PATH-VARIABLE: the file to exec */
#define Z_PLAN_SECCOMP_NOW 30   /* FLAGS: load the program now, before the capabilities go */
#define Z_PLAN_CREDS 31         /* see setup.c, creds */
#define Z_PLAN_TRACE 32         /* STEP: "zoned-trace STEP MS" on stderr */
#define Z_PLAN_EXEC 33          /* FIFO KEEP_PDEATHSIG SECCOMP_FLAGS LOAD_PROGRAM NARGS ARGS... ENV */
#define Z_PLAN_PROGRAM 34       /* (raw bytes) the seccomp program */
#define Z_PLAN_CONSOLE 35       /* ROWS COLS: a pty, our terminal; its master sent to zoned */
#define Z_PLAN_LATE 36          /* (before EXEC) "start" brings the process: a late plan */
#define Z_PLAN_ARGV 37          /* NARGS ARGS... ENV...: a late plan's process */
#define Z_PLAN_USERNS 38        /* USERNS_FD PIDNS ROOTLESS: see setupproc.c, op_userns */
#define Z_PLAN_HOOKS 39         /* KIND COUNT HOOKS...: see setuphooks.c, op_hooks */
#define Z_PLAN_BIND_DEVICE 40   /* PATH CONTEXT: see setup.c, op_bind_device */
