/*
 * Paths inside a container's rootfs, resolved as if the rootfs were / and held open as fds:
 * the C init's (csrc/setup.c) copy of zoned/child/inroot.py, whose docstring says why. In
 * short: the rootfs is untrusted, so a path is walked component by component from an fd of
 * the root (O_NOFOLLOW, readlinkat: symlinks are followed inside the root, `..` stops at
 * it; past the first missing component the rest is lexical), then opened one component at
 * a time with openat2 (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS),
 * making what is missing, so that a symlink swapped in meanwhile fails rather than leads
 * out. Mounts then go through /proc/self/fd/N.
 *
 * Functions return -1 with errno set, and z_errname naming the component that failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/openat2.h>

#define Z_MAX_SYMLINKS 40  /* the kernel's MAXSYMLINKS */
#define Z_STEP_RESOLVE (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

static const char *z_errcall;        /* the call that failed, as zoned.linux.syscalls names
                                        it ("mount: ..."); NULL for os.* ones in Python */
static const char *z_errname;        /* the path or name an error is about (a copy) */
static const char *z_errtext;        /* a text of ours instead of strerror(errno) */
static char z_errname_buf[PATH_MAX];

/* Where an error comes from, for its message (setup.c, what). */
static void z_err(const char *call, const char *name)
{
    z_errcall = call;
    z_errname = NULL;
    if (name) {
        snprintf(z_errname_buf, sizeof(z_errname_buf), "%s", name);
        z_errname = z_errname_buf;
    }
}

struct z_names {                     /* a resolved path's components (no "", ".", "..") */
    int n, size;
    char **v;
};

struct z_target {
    int fd, parent;                  /* O_PATH fds; parent -1 for the root itself */
    char name[NAME_MAX + 1];
    char *shown;                     /* "/" + the resolved names: for messages */
};

static void names_drop(struct z_names *p)  /* the components, not the array */
{
    while (p->n > 0)
        free(p->v[--p->n]);
}

static void names_free(struct z_names *p)
{
    names_drop(p);
    free(p->v);
    p->v = NULL;
    p->size = 0;
}

static int names_push(struct z_names *p, const char *name)
{
    if (p->n == p->size) {
        char **grown = realloc(p->v, sizeof(char *) * (size_t)(p->size * 2 + 16));
        if (!grown)
            return -1;
        p->v = grown;
        p->size = p->size * 2 + 16;
    }
    if (!(p->v[p->n] = strdup(name)))
        return -1;
    p->n++;
    return 0;
}

/* "/" + the names joined (malloc'd), or NULL. */
static char *names_shown(const struct z_names *names)
{
    size_t len = 2;
    char *out, *o;
    for (int i = 0; i < names->n; i++)
        len += strlen(names->v[i]) + 1;
    if (!(o = out = malloc(len)))
        return NULL;
    *o++ = '/';
    for (int i = 0; i < names->n; i++) {
        size_t l = strlen(names->v[i]);
        if (i)
            *o++ = '/';
        memcpy(o, names->v[i], l);
        o += l;
    }
    *o = 0;
    return out;
}

/* One component beneath dir_fd, never through a symlink. */
static int z_step(int dir_fd, const char *name, int flags)
{
    struct open_how how = {0};
    int fd;
    how.flags = (uint64_t)(O_PATH | O_NOFOLLOW | O_CLOEXEC | flags);
    how.resolve = Z_STEP_RESOLVE;
    fd = (int)syscall(SYS_openat2, dir_fd, name, &how, sizeof(how));
    if (fd < 0)
        z_err("openat2", name);
    return fd;
}

/* inroot.resolve: the components of `path` inside the root (see the top). `out` is made
 * here; names_free it. */
static int z_resolve(int root_fd, const char *path, struct z_names *out)
{
    int *fds = malloc(sizeof(int) * 16), nfds = 1, fds_size = 16, hops = 0, rc = -1;
    size_t pos = 0;
    char *todo = strdup(path);
    static char part[NAME_MAX + 1], target[PATH_MAX];

    out->n = out->size = 0;
    out->v = NULL;
    if (!todo || !fds)
        goto out;
    fds[0] = root_fd;
    for (;;) {
        size_t end, len;
        struct stat st;
        int fd;

        while (todo[pos] == '/')
            pos++;
        if (!todo[pos])
            break;
        for (end = pos; todo[end] && todo[end] != '/'; end++)
            ;
        len = end - pos;
        if (len > NAME_MAX) {
            errno = ENAMETOOLONG;
            z_err(NULL, path);
            goto out;
        }
        memcpy(part, todo + pos, len);
        part[len] = 0;
        pos = end;
        if (strcmp(part, ".") == 0)
            continue;
        if (strcmp(part, "..") == 0) {
            if (out->n > 0) {
                free(out->v[--out->n]);
                if (nfds > out->n + 1)
                    close(fds[--nfds]);
            }
            continue;
        }
        if (nfds <= out->n) {  /* below a missing component: lexical */
            if (names_push(out, part) < 0)
                goto out;
            continue;
        }
        fd = openat(fds[nfds - 1], part, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT) {
                if (names_push(out, part) < 0)
                    goto out;
                continue;
            }
            z_err(NULL, part);
            goto out;
        }
        if (fstat(fd, &st) < 0) {
            close(fd);
            goto out;
        }
        if (S_ISLNK(st.st_mode)) {
            ssize_t n = readlinkat(fds[nfds - 1], part, target, sizeof(target) - 1);
            char *next;
            close(fd);
            if (n < 0) {
                z_err(NULL, part);
                goto out;
            }
            target[n] = 0;
            if (++hops > Z_MAX_SYMLINKS) {
                errno = ELOOP;
                z_err(NULL, path);
                z_errtext = "too many levels of symbolic links";
                goto out;
            }
            if (target[0] == '/') {
                while (nfds > 1)
                    close(fds[--nfds]);
                names_drop(out);
            }
            next = malloc((size_t)n + 1 + strlen(todo + pos) + 1);
            if (!next)
                goto out;
            memcpy(next, target, (size_t)n);
            next[n] = '/';
            strcpy(next + n + 1, todo + pos);
            free(todo);
            todo = next;
            pos = 0;
            continue;
        }
        if (nfds == fds_size) {
            int *grown = realloc(fds, sizeof(int) * (size_t)fds_size * 2);
            if (!grown) {
                close(fd);
                goto out;
            }
            fds = grown;
            fds_size *= 2;
        }
        if (names_push(out, part) < 0) {
            close(fd);
            goto out;
        }
        fds[nfds++] = fd;
    }
    rc = 0;
out:
    while (fds && nfds > 1)
        close(fds[--nfds]);
    free(fds);
    free(todo);
    if (rc < 0)
        names_free(out);
    return rc;
}

/* inroot.open_dir: an O_PATH fd of root/names[0..n), made (0755) where missing. */
static int z_open_dir(int root_fd, char *const *names, int n, int create)
{
    int fd = fcntl(root_fd, F_DUPFD_CLOEXEC, 3);
    for (int i = 0; fd >= 0 && i < n; i++) {
        int next = z_step(fd, names[i], O_DIRECTORY);
        if (next < 0 && errno == ENOENT && create) {
            if (mkdirat(fd, names[i], 0755) < 0 && errno != EEXIST) {
                z_err(NULL, names[i]);
                close(fd);
                return -1;
            }
            next = z_step(fd, names[i], O_DIRECTORY);
        }
        close(fd);
        fd = next;
    }
    return fd;
}

/* resolve() followed every symlink: one here now was swapped in since. Refuse it. */
static int z_not_symlink(int fd, const char *name)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || S_ISLNK(st.st_mode)) {
        close(fd);
        errno = ELOOP;
        z_err(NULL, name);
        z_errtext = "became a symbolic link while zoned resolved it";
        return -1;
    }
    return fd;
}

/* kind 'd': make a missing last component a directory, 'f' a file, 0: ENOENT. */
static int z_open_last(int parent, const char *name, int kind)
{
    int fd = z_step(parent, name, 0);
    if (fd >= 0)
        return z_not_symlink(fd, name);
    if (errno != ENOENT || !kind)
        return -1;
    if (kind == 'd') {
        if (mkdirat(parent, name, 0755) < 0 && errno != EEXIST)
            return z_err(NULL, name), -1;
    } else {
        int f = openat(parent, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC,
                       0644);
        if (f < 0 && errno != EEXIST)
            return z_err(NULL, name), -1;
        if (f >= 0)
            close(f);
    }
    fd = z_step(parent, name, 0);
    return fd < 0 ? -1 : z_not_symlink(fd, name);
}

static void z_target_close(struct z_target *t)
{
    if (t->fd >= 0)
        close(t->fd);
    if (t->parent >= 0)
        close(t->parent);
    t->fd = t->parent = -1;
    free(t->shown);
    t->shown = NULL;
}

/* inroot.target: `names` (resolved) opened inside the root, parents made; see z_open_last.
 * z_target_close it (also after a failure). */
static int z_target_names(int root_fd, const struct z_names *names, int kind,
                          struct z_target *t)
{
    t->fd = t->parent = -1;
    if (!(t->shown = names_shown(names)))
        return -1;
    if (names->n == 0) {
        struct open_how how = {0};
        how.flags = O_PATH | O_CLOEXEC;
        how.resolve = Z_STEP_RESOLVE;
        t->fd = (int)syscall(SYS_openat2, root_fd, ".", &how, sizeof(how));
        return t->fd < 0 ? -1 : 0;
    }
    t->parent = z_open_dir(root_fd, names->v, names->n - 1, kind != 0);
    if (t->parent < 0)
        return -1;
    strcpy(t->name, names->v[names->n - 1]);
    t->fd = z_open_last(t->parent, t->name, kind);
    return t->fd < 0 ? -1 : 0;
}

static int z_target(int root_fd, const char *path, int kind, struct z_target *t)
{
    struct z_names names;
    int rc;
    t->fd = t->parent = -1;
    t->shown = NULL;
    if (z_resolve(root_fd, path, &names) < 0)
        return -1;
    rc = z_target_names(root_fd, &names, kind, t);
    names_free(&names);
    return rc;
}

/* Target.reopen: after a mount onto it, the new mount's root. */
static int z_target_reopen(struct z_target *t)
{
    int fd;
    if (t->parent < 0)
        return errno = EINVAL, z_err(NULL, t->shown), -1;
    fd = z_step(t->parent, t->name, 0);
    if (fd < 0)
        return -1;
    close(t->fd);
    t->fd = fd;
    return 0;
}

/* inroot.leaf: the parent of `path` (resolved inside the root, made) and its last name
 * (of the components other than "" and "."), not followed: a symlink there is replaced,
 * never written through. `name` has NAME_MAX + 1 bytes. */
static int z_leaf(int root_fd, const char *path, char *name)
{
    struct z_names names;
    const char *p = path, *last = NULL;
    size_t len = 0;
    char *dir;
    int fd;

    while (*p) {  /* the last component that is not "" or "." */
        const char *s = p;
        while (*p && *p != '/')
            p++;
        if (p - s > 0 && !(p - s == 1 && *s == '.')) {
            last = s;
            len = (size_t)(p - s);
        }
        while (*p == '/')
            p++;
    }
    if (!last || len > NAME_MAX || (len == 2 && last[0] == '.' && last[1] == '.')) {
        z_err(NULL, path);
        z_errtext = "not a path to a file";
        return errno = EINVAL, -1;
    }
    memcpy(name, last, len);
    name[len] = 0;
    if (!(dir = strndup(path, (size_t)(last - path))))
        return -1;
    fd = z_resolve(root_fd, dir, &names);
    free(dir);
    if (fd < 0)
        return -1;
    fd = z_open_dir(root_fd, names.v, names.n, 1);
    names_free(&names);
    return fd;
}

/* inroot.file_target: a regular file at `path` inside the root to mount onto (a device
 * bound in a user namespace): a symlink in its place is replaced by the file, never
 * followed. z_target_close it (also after a failure). */
static int z_file_target(int root_fd, const char *path, struct z_target *t)
{
    struct stat st;
    t->fd = -1;
    t->shown = NULL;
    if ((t->parent = z_leaf(root_fd, path, t->name)) < 0)
        return -1;
    if (!(t->shown = strdup(path)))
        return -1;
    t->fd = z_step(t->parent, t->name, 0);
    if (t->fd >= 0 && fstat(t->fd, &st) == 0 && !S_ISLNK(st.st_mode))
        return 0;
    if (t->fd >= 0) {
        close(t->fd);
        t->fd = -1;
        if (unlinkat(t->parent, t->name, 0) < 0)
            return z_err(NULL, t->name), -1;
    } else if (errno != ENOENT) {
        return -1;
    }
    t->fd = z_open_last(t->parent, t->name, 'f');
    return t->fd < 0 ? -1 : 0;
}

/* inroot.replace_node: mknod at `path` inside the root, replacing a file, node or symlink
 * there (never a directory, never what a symlink points at). */
static int z_replace_node(int root_fd, const char *path, mode_t mode, dev_t dev, uid_t uid,
                          gid_t gid)
{
    static char name[NAME_MAX + 1];  /* (z_errname may point here) */
    mode_t old;
    int rc, parent = z_leaf(root_fd, path, name);
    if (parent < 0)
        return -1;
    if (unlinkat(parent, name, 0) < 0 && errno != ENOENT) {
        z_err(NULL, name);
        close(parent);
        return -1;
    }
    old = umask(0);  /* the mode exactly as configured */
    rc = mknodat(parent, name, mode, dev);
    umask(old);
    if (rc == 0 && (uid || gid))
        rc = fchownat(parent, name, uid, gid, AT_SYMLINK_NOFOLLOW);
    if (rc < 0)
        z_err(NULL, name);
    close(parent);
    return rc;
}
