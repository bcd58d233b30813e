/* Declarations the cffi builder exposes to Python (see csrc/build.py). */
int z_unshare(int flags);
int z_setns(int fd, int nstype);
int z_pivot_root(const char *new_root, const char *put_old);
int z_mount(const char *source, const char *target, const char *fstype,
            unsigned long flags, const char *data);
int z_umount2(const char *target, int flags);
int z_mount_setattr(int dirfd, const char *path, unsigned int flags,
                    unsigned long long attr_set, unsigned long long attr_clr,
                    unsigned long long propagation, int userns_fd);
int z_open_tree(int dirfd, const char *path, unsigned int flags);
int z_move_mount(int from_dirfd, const char *from_path, int to_dirfd, const char *to_path,
                 unsigned int flags);
int z_sethostname(const char *name, size_t len);
int z_setdomainname(const char *name, size_t len);
int z_pidfd_open(int pid, unsigned int flags);
int z_pidfd_send_signal(int pidfd, int sig, unsigned int flags);
int z_close_range(unsigned int first, unsigned int last, unsigned int flags);
void z_close_fds(const int *fds, int n);
int z_make_netns(void);
int z_seccomp_set_filter(unsigned int flags, const unsigned char *prog, size_t len);
int z_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4,
            unsigned long a5);
int z_personality(unsigned long persona);
int z_bpf(int cmd, void *attr, unsigned int size);
int z_clone3(unsigned long long flags, int cgroup_fd, int *pidfd_out);
#define Z_STEP_PDEATHSIG 1
#define Z_STEP_SETSID 2
#define Z_STEP_TTY 3
#define Z_STEP_SECCOMP 4
#define Z_STEP_EXEC 5
#define Z_STEP_CGROUP 6
#define Z_STEP_USERNS 7
#define Z_STEP_CREDS 10  /* + the Z_CREDS_ step that failed */
#define Z_CREDS_KEEPCAPS 1
#define Z_CREDS_BOUNDING 2
#define Z_CREDS_GROUPS 3
#define Z_CREDS_GID 4
#define Z_CREDS_UID 5
#define Z_CREDS_CAPSET 6
#define Z_CREDS_PRCTL 7
#define Z_CREDS_AMBIENT 8
#define Z_CREDS_NNP 9
int z_spawn_exec(const char *path, char *const argv[], char *const envp[],
                 const unsigned char *bpf, size_t bpf_len, unsigned int seccomp_flags,
                 int pdeathsig, int parent_pidfd, int tty_fd, int go_fd, int err_fd);
int z_spawn_exec_joining(const char *path, char *const argv[], char *const envp[],
                         const unsigned char *bpf, size_t bpf_len,
                         unsigned int seccomp_flags, int pdeathsig, int parent_pidfd,
                         int tty_fd, int go_fd, int err_fd, int cgroup_fd,
                         const int *tasks, int ntasks, char *const *creds, int userns_fd,
                         int *joined);
int z_execveat(int fd, char *const argv[], char *const envp[]);
int z_fork_exec_start(unsigned long long flags, int cgroup_fd, int exe_fd, const char *path,
                      const int *keep, int nkeep, char *const argv[], char *const envp[],
                      int sock, void **pending);
void z_fork_exec_finish(void *pending);
int z_exec(const char *path, char *const argv[], char *const envp[],
           const unsigned char *bpf, size_t bpf_len, unsigned int seccomp_flags);
int z_openat2(int dirfd, const char *path, unsigned long long flags,
              unsigned long long mode, unsigned long long resolve);
long long z_fstatfs_type(int fd);
int z_capget(unsigned long long *effective, unsigned long long *permitted,
             unsigned long long *inheritable);
int z_capset(unsigned long long effective, unsigned long long permitted,
             unsigned long long inheritable);
