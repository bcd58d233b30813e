#!/bin/bash
# Build and install CRIU 4.2.1 for zoned's checkpoint/restore (as root, Debian 12 bookworm).
#
# Debian 12's criu (3.17) fails on current kernels (vDSO), and sid's/trixie's binary
# packages pull a newer libc. So: take only the *source* of sid's criu 4.2.1 (a deb-src-only
# sources file), check its sha256, build just the criu binary against bookworm's libraries
# and install it to $PREFIX/sbin/criu (default /usr/local/sbin/criu), where zoned looks
# after $ZONED_CRIU. A criu 3.17 installed by runc's Recommends at /usr/sbin/criu is left
# alone.
#
# zoned's patches (scripts/criu-patches/*.patch, each with its reason) are applied to the
# source; a marker next to the binary ($PREFIX/share/zoned/criu-patches) records which,
# so a criu built before a patch was added is rebuilt.
#
# Idempotent: exits at once if a criu >= 4.2 is already there with these patches (or
# $ZONED_CRIU names one, or one other than $DEST is in PATH: zoned works with a stock
# criu, only slower).
# Environment: ZONED_CRIU (an existing binary to accept), PREFIX (/usr/local),
# CRIU_BUILD_DIR (the scratch dir, which must not exist yet; default a new `mktemp -d` one),
# removed when the script exits unless KEEP_BUILD=1.
# The scratch dir is made anew, 0700, never a fixed /var/tmp name: a user who made that
# first (or a symlink there) could swap the tarball between its sha256 check and tar.
set -euo pipefail

CRIU_VERSION=4.2.1
CRIU_DEBVER=4.2.1-1
CRIU_SHA256=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
PREFIX=${PREFIX:-/usr/local}
DEST=$PREFIX/sbin/criu
SRC_LIST=/etc/apt/sources.list.d/zoned-criu-src.sources
BUILD_DIR=  # made in step 3
BUILD_DEPS="gcc make pkg-config libc6-dev libprotobuf-c-dev protobuf-c-compiler \
libnl-3-dev libnet1-dev libcap-dev libbsd-dev libaio-dev libgnutls28-dev libnftables-dev \
uuid-dev protobuf-compiler libprotobuf-dev ca-certificates patch"

PATCH_DIR=$(cd "$(dirname "$0")" && pwd)/criu-patches
MARKER=$PREFIX/share/zoned/criu-patches
# The patch set, by content: what the marker must say for $DEST to be current.
# (No patch at all is a set too: cat's failure on the unmatched glob must not end the script.)
patchset() { { cat "$PATCH_DIR"/*.patch 2>/dev/null || true; } | sha256sum | cut -d' ' -f1; }

log() { echo "install-criu: $*" >&2; }
die() { log "error: $*"; exit 1; }

# "criu --version" prints "Version: 4.2.1"; succeed if the binary is >= 4.2.
version_ok() {
    local v
    v=$("$1" --version 2>/dev/null | sed -n 's/^Version: *//p' | head -n1) || return 1
    [ -n "$v" ] || return 1
    local major=${v%%.*} rest=${v#*.}
    local minor=${rest%%.*}
    [ "$major" -gt 4 ] 2>/dev/null || { [ "$major" -eq 4 ] && [ "${minor:-0}" -ge 2 ]; } 2>/dev/null
}

# Where zoned looks (zoned.checkpoint.criu.find_criu): $ZONED_CRIU, /usr/local/sbin/criu, PATH.
in_path=$(command -v criu 2>/dev/null || true)
[ "$in_path" != "$DEST" ] || in_path=
for cand in "${ZONED_CRIU:-}" "$DEST" "$in_path"; do
    if [ -n "$cand" ] && [ -x "$cand" ] && version_ok "$cand"; then
        if [ "$cand" = "$DEST" ] && [ "$(cat "$MARKER" 2>/dev/null)" != "$(patchset)" ]; then
            log "$DEST lacks zoned's current patches ($PATCH_DIR): rebuilding"
            continue
        fi
        log "$("$cand" --version | head -n1) already at $cand; nothing to do"
        exit 0
    fi
done

[ "$(id -u)" -eq 0 ] || die "must run as root"
[ -r /etc/os-release ] && . /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] || log "warning: tested on Debian 12 bookworm only"

start=$(date +%s)

# 1. A deb-src line for sid, derived from the machine's own Debian URI; deb-src only, so
#    no sid binary can ever be installed from it. Removed again when the script exits.
uri=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)\/\?$/\1/p' /etc/apt/sources.list.d/debian.sources \
        2>/dev/null | head -n1 || true)
if [ -z "$uri" ]; then
    uri=$(sed -n 's/^deb \(\[[^]]*\] \)\?\(http[^ ]*\/debian\)\/\? .*/\2/p' /etc/apt/sources.list \
            2>/dev/null | head -n1 || true)
fi
uri=${uri:-http://deb.debian.org/debian}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cat > "$SRC_LIST.tmp" <<EOF
# Added by zoned scripts/install-criu.sh: source packages only (criu $CRIU_DEBVER).
Types: deb-src
URIs: $uri
Suites: sid
Components: main
Signed-By: $keyring
EOF
mv "$SRC_LIST.tmp" "$SRC_LIST"
# Only needed for this download: later `apt-get update`s need not fetch sid's Sources.
cleanup() {
    rm -f "$SRC_LIST" "$SRC_LIST.tmp"
    if [ -n "$BUILD_DIR" ]; then
        if [ "${KEEP_BUILD:-0}" = 1 ]; then
            log "build kept in $BUILD_DIR"
        else
            cd / && rm -rf "$BUILD_DIR"
        fi
    fi
}
trap cleanup EXIT
log "deb-src for sid from $uri in $SRC_LIST"

# 2. Build dependencies (bookworm's), only the missing ones.
apt-get update -qq
missing=$(for p in $BUILD_DEPS; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"
done)
if [ -n "$missing" ]; then
    log "installing build deps: $(echo $missing)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# 3. The orig tarball. The .debian part of sid's source may 404 (a newer revision replaced
#    it); the orig tarball is all we need, so apt-get's exit status is not trusted: the
#    sha256 is.
if [ -n "${CRIU_BUILD_DIR:-}" ]; then
    # mkdir, not mkdir -p: fails on anything already there (anyone's, or a symlink)
    mkdir -m 0700 "$CRIU_BUILD_DIR" ||
        die "CRIU_BUILD_DIR=$CRIU_BUILD_DIR: cannot make it anew (remove it, or unset it)"
    BUILD_DIR=$CRIU_BUILD_DIR
else
    BUILD_DIR=$(mktemp -d "${TMPDIR:-/var/tmp}/zoned-criu-build.XXXXXXXX")
fi
cd "$BUILD_DIR"
apt-get source -qq --download-only "criu=$CRIU_DEBVER" >apt-source.log 2>&1 ||
    log "apt-get source reported an error (expected if the .debian part 404s); checking the orig tarball"
tarball=
for f in criu_${CRIU_VERSION}.orig.tar.*; do [ -f "$f" ] && tarball=$f; done
[ -n "$tarball" ] || { cat apt-source.log >&2; die "criu_${CRIU_VERSION}.orig.tar.* not downloaded"; }
echo "$CRIU_SHA256  $tarball" | sha256sum -c --quiet - || die "$tarball: sha256 mismatch"
log "$tarball: sha256 ok"

# 4. Build only the criu binary (no docs, no plugins, no crit/python).
mkdir src
tar xf "$tarball" -C src
set -- src/*/
[ $# -eq 1 ] && [ -f "$1/Makefile" ] || die "unexpected layout of $tarball"
cd "$1"
for p in "$PATCH_DIR"/*.patch; do
    [ -f "$p" ] || continue
    patch -p1 --forward --silent < "$p" || die "patch $(basename "$p") does not apply"
    log "applied $(basename "$p")"
done
log "building criu (make -j$(nproc) criu)"
make -j"$(nproc)" criu >"$BUILD_DIR/build.log" 2>&1 || { tail -n 40 "$BUILD_DIR/build.log" >&2; die "build failed"; }
install -D -m 0755 criu/criu "$DEST"
mkdir -p "$(dirname "$MARKER")"
patchset > "$MARKER"
# The binary's run-time libraries came in as dependencies of the -dev packages; keep them
# if the build dependencies are removed later (apt autoremove).
libs=
for so in $(ldd "$DEST" | awk '$3 ~ /^\// {print $3}'); do
    for path in "$so" "/usr$so" "${so#/usr}"; do
        pkg=$(dpkg-query -S "$path" 2>/dev/null | head -n1 | cut -d: -f1) || true
        [ -n "$pkg" ] && { libs="$libs $pkg"; break; }
    done
done
[ -z "$libs" ] || apt-mark manual $libs >/dev/null
cd /

version_ok "$DEST" || die "$DEST --version: $("$DEST" --version 2>&1 | head -n1)"
log "installed $("$DEST" --version | head -n1) at $DEST in $(( $(date +%s) - start ))s"

# 5. Does this kernel give criu what it needs? Warnings about optional features are
#    printed, not fatal; a failing basic check is.
if "$DEST" check; then
    log "criu check: ok"
else
    die "criu check failed (see above)"
fi
