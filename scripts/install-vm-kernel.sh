#!/bin/bash
# The guest kernel of zoned's VM backend: Debian's generic kernel (the package linux-image-amd64
# depends on), unpacked -- never installed into /boot (no postinst, no grub) -- into
#   /var/lib/zoned/vm/kernel/<version>/{vmlinux,config,modules/...}
# vmlinux is the uncompressed ELF taken out of the bzImage (as the kernel tree's
# scripts/extract-vmlinux does): QEMU boots it directly (PVH), which under TCG saves ~4 s of
# decompression per boot. Only the modules the guest init loads are kept (plus what they depend
# on, from each module's own .modinfo "depends="). Idempotent: exits at once when a kernel is
# there. $ZONED_VM_DIR moves /var/lib/zoned/vm.
set -euo pipefail

VM_DIR=${ZONED_VM_DIR:-/var/lib/zoned/vm}
KDIR=$VM_DIR/kernel
# The modules the guest init loads: always (load-order), and for 9p volumes only
# (load-order-9p, what they need beyond the first set).
MODULES="virtio_mmio virtio_blk virtio_net virtio_console squashfs overlay"
MODULES_9P="9pnet_virtio 9p"

# Done when a kernel is there with these very module lists (.complete holds the first,
# .complete-9p the second: an older copy of this script, which knew only .complete, then
# accepts this kernel too instead of unpacking its own over it).
for done in "$KDIR"/*/.complete; do
	[ -f "$done" ] && [ "$(cat "$done")" = "$MODULES" ] &&
		[ "$(cat "$done-9p" 2>/dev/null)" = "$MODULES_9P" ] && exit 0
done

pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1)
if [ -z "$pkg" ]; then
	apt-get update -qq
	pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1)
fi
[ -n "$pkg" ] || { echo "install-vm-kernel: cannot resolve linux-image-amd64" >&2; exit 1; }

tmp=$(mktemp -d /tmp/zoned-vm-kernel.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
echo "vm kernel: downloading $pkg"
(cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1) || {
	apt-get update -qq
	(cd "$tmp" && apt-get download -q "$pkg" >/dev/null)
}
dpkg-deb -x "$tmp"/*.deb "$tmp/x"
version=$(ls "$tmp/x/lib/modules" | head -1)
out="$KDIR/$version"
stage="$KDIR/.stage-$version-$$"
rm -rf "$stage"
mkdir -p "$stage/modules"

python3 - "$tmp/x/boot/vmlinuz-$version" "$stage/vmlinux" <<'EOF'
"""extract-vmlinux: find a compressed stream in the bzImage that unpacks to an ELF."""
import gzip, lzma, subprocess, sys, zlib

data = open(sys.argv[1], "rb").read()

def gunzip(b):
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(b)

def unxz(b):
    return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(b)

def unlzma(b):
    return lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(b)

def unzstd(b):
    return subprocess.run(["zstd", "-dcq"], input=b, capture_output=True).stdout

formats = [(b"\x1f\x8b\x08", gunzip), (b"\xfd7zXZ\x00", unxz), (b"(\xb5/\xfd", unzstd),
           (b"]\x00\x00\x00", unlzma)]
for magic, unpack in formats:
    at = data.find(magic)
    while at >= 0:
        try:
            out = unpack(data[at:])
        except Exception:
            out = b""
        if out[:4] == b"\x7fELF":
            open(sys.argv[2], "wb").write(out)
            sys.exit(0)
        at = data.find(magic, at + 1)
sys.exit("extract-vmlinux: no compressed ELF found in " + sys.argv[1])
EOF

cp "$tmp/x/boot/config-$version" "$stage/config"
python3 - "$tmp/x/lib/modules/$version" "$stage/modules" "$MODULES" "$MODULES_9P" <<'EOF'
"""Copy the wanted modules and, transitively, their dependencies (the .modinfo depends=);
write each set's load order (dependencies first), the second set without the first's."""
import os, shutil, sys

src, dst, sets = sys.argv[1], sys.argv[2], [s.split() for s in sys.argv[3:]]
paths = {}
for d, _, files in os.walk(src):
    for f in files:
        if f.endswith(".ko"):
            paths[f[:-3].replace("-", "_")] = os.path.join(d, f)

def depends(path):
    data = open(path, "rb").read()
    at = data.find(b"\0depends=")
    if at < 0:
        return []
    value = data[at + 9:data.index(b"\0", at + 9)].decode()
    return [m.replace("-", "_") for m in value.split(",") if m]

seen = set()
def visit(name, order):
    if name in seen:
        return
    seen.add(name)
    if name not in paths:
        sys.exit(f"install-vm-kernel: module {name} not in the package (built in?)")
    for dep in depends(paths[name]):
        visit(dep, order)
    order.append(name)

for i, wanted in enumerate(sets):
    order = []
    for m in wanted:
        visit(m, order)
    for name in order:
        shutil.copy(paths[name], os.path.join(dst, name + ".ko"))
    suffix = "" if i == 0 else "-9p"
    open(os.path.join(dst, "load-order" + suffix), "w").write("\n".join(order) + "\n")
EOF

echo "$MODULES_9P" > "$stage/.complete-9p"
echo "$MODULES" > "$stage/.complete"
# Swap it in (a VM already booted keeps its open vmlinux).
[ -e "$out" ] && mv "$out" "$KDIR/.old-$version-$$"
mv "$stage" "$out"
rm -rf "$KDIR/.old-$version-$$"
echo "vm kernel: $version in $out ($(du -sh "$out" | cut -f1))"
