"""scripts/install-criu.sh's scratch dir (audit 9): it built in a fixed
/var/tmp/zoned-criu-build (rm -rf; mkdir -p; cd; sha256sum -c; tar xf), so a local user
who made that dir between the rm and the mkdir owned where root checked and unpacked the
tarball. The script runs here up to its download, no further: apt-get and dpkg-query are
stubs (the tarball they give fails the sha256, which ends the run), and the sources.list.d
it writes is a temp dir bound over the host's, in a mount namespace of its own."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "install-criu.sh")

STUBS = {
    # `apt-get source` records where it runs (path, mode, owner) and leaves a tarball
    # whose sha256 is wrong; everything else apt-get is asked does nothing
    "apt-get": """#!/bin/sh
[ "$1" = source ] || [ "$2" = source ] || [ "$3" = source ] || exit 0
echo "$(pwd) $(stat -c '%a %u' .)" >> "$PF_LOG"
echo not-criu > criu_4.2.1.orig.tar.gz
""",
    "dpkg-query": "#!/bin/sh\necho 'install ok installed'\n",
    # the attacker winning the race: the dir exists, theirs and open, before mkdir runs
    "mkdir": """#!/bin/sh
for a in "$@"; do
    if [ "$a" = "$PF_PLANT" ]; then
        /bin/mkdir -p "$PF_PLANT" && chown 65534:65534 "$PF_PLANT" && chmod 777 "$PF_PLANT"
    fi
done
exec /bin/mkdir "$@"
""",
}


@pytest.fixture
def sandbox():
    base = tempfile.mkdtemp(prefix="pf-criu-", dir="/tmp")
    os.chmod(base, 0o755)
    stubs = os.path.join(base, "bin")
    os.mkdir(stubs)
    for name, text in STUBS.items():
        with open(os.path.join(stubs, name), "w") as f:
            f.write(text)
        os.chmod(os.path.join(stubs, name), 0o755)
    for d in ("sources", "tmp", "prefix"):
        os.mkdir(os.path.join(base, d))
    yield base
    shutil.rmtree(base)


def run_script(base: str, **env: str) -> subprocess.CompletedProcess:
    """install-criu.sh with the stubs first in PATH (no criu in it: it builds), its
    sources file in `base`/sources: it gets as far as the sha256 check."""
    full = {"PATH": f"{base}/bin:/usr/bin:/bin", "PREFIX": f"{base}/prefix",
            "TMPDIR": f"{base}/tmp", "PF_LOG": f"{base}/log", "PF_PLANT": f"{base}/plant",
            "HOME": "/root", **env}
    cmd = (f"mount --bind {base}/sources /etc/apt/sources.list.d && "
           f"exec bash {SCRIPT}")
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", cmd],
                          env=full, capture_output=True, text=True, timeout=60)


def logged(base: str) -> list[list[str]]:
    try:
        with open(os.path.join(base, "log")) as f:
            return [line.split() for line in f]
    except FileNotFoundError:
        return []


def test_the_build_dir_is_a_new_private_one_removed_at_the_end(sandbox):
    p = run_script(sandbox)
    assert p.returncode == 1 and "sha256 mismatch" in p.stderr, p.stderr
    [(where, mode, uid)] = logged(sandbox)
    assert os.path.dirname(where) == f"{sandbox}/tmp"  # mktemp -d in $TMPDIR
    assert os.path.basename(where).startswith("zoned-criu-build.")
    assert (mode, uid) == ("700", "0")
    assert os.listdir(f"{sandbox}/tmp") == []  # removed by the trap, on failure too
    assert os.listdir(f"{sandbox}/sources") == []


def test_a_build_dir_someone_made_first_is_refused(sandbox):
    """CRIU_BUILD_DIR names a dir to make: another user's made first (the race won) is
    never used, nor removed."""
    plant = f"{sandbox}/plant"
    p = run_script(sandbox, CRIU_BUILD_DIR=plant)
    assert p.returncode == 1 and "cannot make it anew" in p.stderr, p.stderr
    assert logged(sandbox) == []  # nothing was downloaded there
    st = os.lstat(plant)
    assert st.st_uid == 65534  # theirs, left as it was
