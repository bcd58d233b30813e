# Two commands do all the set-up on a fresh Debian machine (as root):
#   make demo   install what is missing, then run a container that says who and where it is
#   make test   the same set-up, then the whole test suite
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
ZONED := $(VENV)/bin/zoned
STAMP := .stamps

# Build and run dependencies (Debian package names). --no-install-recommends keeps Debian's
# criu 3.17 (recommended by runc) off the machine: it does not work on these kernels.
APT_PACKAGES := python3-venv python3-dev gcc libc6-dev make libffi-dev libseccomp-dev \
	libcap-dev pkg-config busybox-static runc util-linux procps iproute2 ca-certificates \
	nftables iperf3 openssh-server openssh-client iputils-ping \
	podman conmon golang-github-containers-common containerd \
	qemu-system-x86 squashfs-tools mmdebstrap uidmap slirp4netns passt musl-tools \
	python3-matplotlib strace

.PHONY: all setup systemd-unit criu vm-kernel bytecode demo test bench-startup bench-density image clean distclean

all: setup

setup: $(STAMP)/apt $(STAMP)/venv $(STAMP)/shim zoned/libexec/zoned-init zoned/libexec/zoned-logger \
	zoned/libexec/zoned-spawn zoned/libexec/zoned-vminit zoned/libexec/zoned-vmwrap \
	zoned/libexec/zoned-vmlog zoned/libexec/zoned-monitor zoned/libexec/zoned-criuexec \
	zoned/libexec/zoned-release \
	bytecode image criu vm-kernel \
	systemd-unit

$(STAMP)/apt: Makefile
	@mkdir -p $(STAMP)
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "apt: installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@touch $@

# The venv is built from /usr/bin/python3 (no pyenv shim on the CLI's start path).
$(STAMP)/venv: $(STAMP)/apt pyproject.toml setup.py $(wildcard csrc/*.c csrc/*.h csrc/*.py csrc/*.cdef)
	@test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel cffi
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' \
		--config-settings editable_mode=compat
	@touch $@

# The `zoned` command: a shim written over pip's entry script. `python -S` skips site (the
# .pth files, sitecustomize: ~3 ms of every command; start-up is a feature); the two paths
# site would add (this checkout, installed editable, and the venv's site-packages) are set
# here instead. Rewritten whenever pip has rewritten the entry script.
$(STAMP)/shim: $(STAMP)/venv Makefile
	@purelib=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	printf '%s\n' '#!$(abspath $(PY)) -S' \
		'# zoned: written by `make setup` (Makefile): python -S, with the paths site would add' \
		'import sys' "sys.path[0:1] = ['$(CURDIR)', '$$purelib']" \
		'from zoned.cli import console' 'console()' > $(ZONED).tmp
	@chmod 755 $(ZONED).tmp && mv $(ZONED).tmp $(ZONED) && touch $@

# CRIU 4.2.1 for checkpoint/restore, built from Debian's source (bookworm's criu 3.17 fails
# on current kernels); exits at once when a criu >= 4.2 is installed where zoned looks.
criu: $(STAMP)/apt
	@scripts/install-criu.sh

# The guest kernel of the VM backend (zoned/vm/): Debian's, unpacked (not installed) under
# /var/lib/zoned/vm/kernel/; exits at once when present.
vm-kernel: $(STAMP)/apt
	@scripts/install-vm-kernel.sh

# Compiled bytecode, written even where PYTHONDONTWRITEBYTECODE is set: without it every
# `zoned` command would compile its modules again (start-up is a feature). Forced (-f):
# compileall skips a .pyc whose recorded mtime matches, even when the source's size does not
# (an edit within the second of the last compile), and that stale .pyc is then never used.
# Then the same code in one pack (zoned/modulepack.py): a `zoned run` reads its ~60 modules
# from one file, 2-3 ms sooner; a module whose source changed since loads as usual.
bytecode: $(STAMP)/shim
	@$(PY) -m compileall -q -f zoned
	@$(PY) -c 'from zoned import modulepack_write; modulepack_write.write("zoned")'

# The C helpers below are static, linked with musl rather than glibc: zoned-spawn is 42 KiB
# instead of 690 (each start copies it into a sealed memfd and execs it: 0.6 ms less per
# `zoned run`), and a zoned-logger, one per detached zone, 39 KiB. musl's headers have no
# kernel headers: linux/, asm/ and asm-generic/ come from a directory of just those three
# (not the whole of glibc's /usr/include, whose libc headers must not mix with musl's).
STATIC_CC := musl-gcc -static -Os -s -Wall -isystem $(STAMP)/musl-kernel-headers
$(STAMP)/musl-kernel-headers: $(STAMP)/apt
	@mkdir -p $@
	@ln -sfn /usr/include/linux $@/linux
	@ln -sfn /usr/include/asm-generic $@/asm-generic
	@ln -sfn /usr/include/$$(gcc -print-multiarch)/asm $@/asm

# zoned's PID-1 reaper for --init; static, because an image may have no libc.
zoned/libexec/zoned-init: csrc/init.c $(STAMP)/musl-kernel-headers
	@mkdir -p zoned/libexec
	$(STATIC_CC) -o $@ csrc/init.c

# PID 1 of a VM (the guest side of zoned/vm/): static, it runs from the initramfs.
zoned/libexec/zoned-vminit: csrc/vminit.c csrc/vmnet.h csrc/vmagent.h $(STAMP)/musl-kernel-headers
	@mkdir -p zoned/libexec
	$(STATIC_CC) -Icsrc -o $@ csrc/vminit.c

# What an OCI client sees as a VM container's init: QEMU's parent, exiting with the
# guest's exit code (csrc/vmwrap.c says why).
zoned/libexec/zoned-vmwrap: csrc/vmwrap.c $(STAMP)/musl-kernel-headers
	@mkdir -p zoned/libexec
	$(STATIC_CC) -o $@ csrc/vmwrap.c

# A VM's console and ctl writer, bounded (csrc/vmlog.c says why); one runs per VM.
zoned/libexec/zoned-vmlog: csrc/vmlog.c $(STAMP)/musl-kernel-headers
	@mkdir -p zoned/libexec
	$(STATIC_CC) -o $@ csrc/vmlog.c

# The log writer of a detached zone (reads its output pipe, rotates ctr.log by size); static
# and tiny, because one runs per detached zone.
zoned/libexec/zoned-logger: csrc/logger.c csrc/scm.h $(STAMP)/musl-kernel-headers
	@mkdir -p zoned/libexec
	$(STATIC_CC) -o $@ csrc/logger.c

# criu's private mount namespace (overlay, kdat cache, cgroup yard) set up in C, so that
# zoned can vfork it (csrc/criuexec.c says why).
zoned/libexec/zoned-criuexec: csrc/criuexec.c $(STAMP)/musl-kernel-headers
	@mkdir -p zoned/libexec
	$(STATIC_CC) -o $@ csrc/criuexec.c

# The parent of a zone started from a zone file (zoned.zones): exit codes, restart
# policies, its console; static and tiny, because one runs per zone.
zoned/libexec/zoned-monitor: csrc/monitor.c csrc/scm.h $(STAMP)/musl-kernel-headers
	@mkdir -p zoned/libexec
	$(STATIC_CC) -o $@ csrc/monitor.c

# What drops the last reference to the inodes an API operation removed, off the caller's
# path (zoned.linux.lastref; csrc/release.c says why); static and tiny, one per removal.
zoned/libexec/zoned-release: csrc/release.c csrc/keepfds.h $(STAMP)/musl-kernel-headers
	@mkdir -p zoned/libexec
	$(STATIC_CC) -Icsrc -o $@ csrc/release.c

# zoned.service: `zoned autostart` at boot (zones marked autostart, in name order). Installed
# and enabled where systemd runs; the unit's ExecStart is this checkout's zoned.
SYSTEMD_UNIT_DIR ?= /etc/systemd/system
systemd-unit: $(STAMP)/venv dist/zoned.service
	@mkdir -p $(SYSTEMD_UNIT_DIR)
	@sed 's|@ZONED@|$(abspath $(ZONED))|' dist/zoned.service > $(SYSTEMD_UNIT_DIR)/zoned.service
	@if [ -d /run/systemd/system ]; then systemctl daemon-reload && systemctl enable -q zoned.service; fi

# The last step of `zoned exec`, and a container's init from its fork on (`setup`, the
# set-up in C: csrc/setup.c), run from a sealed memfd copy where it waits for `start`
# (csrc/spawn.c says why).
zoned/libexec/zoned-spawn: csrc/spawn.c csrc/zoned.c csrc/zoned.h csrc/setupplan.c csrc/setup.c \
		csrc/setupsync.c csrc/setupproc.c csrc/setuphooks.c \
		csrc/inroot.c csrc/initplan.h $(STAMP)/musl-kernel-headers
	@mkdir -p zoned/libexec
	$(STATIC_CC) -Icsrc -o $@ csrc/spawn.c

# The default image, built locally (never pulled); rebuilt only if missing.
image: $(STAMP)/venv
	@$(ZONED) image ls --format json | grep -q '"name": "busybox"' || $(ZONED) image build busybox || { apt-get update -qq && $(ZONED) image build busybox; }

demo: setup
	@$(ZONED) run --rm --hostname demo-zone --memory 64m --pids-limit 64 \
		-v $(CURDIR)/examples:/examples:ro -- sh /examples/whoami.sh
	@$(ZONED) run --rm --backend vm --hostname demo-vm --cpus 2 --memory 256m -- sh -c \
		'echo "And as a VM: kernel $$(uname -r), $$(grep -c processor /proc/cpuinfo) vCPUs, $$(grep MemTotal /proc/meminfo | tr -s " ")."'

test: setup
	$(VENV)/bin/ruff check zoned tests bench
	$(PY) -m pytest -q tests

# `zoned bench` (zoned/bench): zones vs VMs, runc and podman side by side; plots with the
# venv's matplotlib (pip install -e '.[plot]') or else Debian's python3-matplotlib
# (apt-get install python3-matplotlib), run by /usr/bin/python3.
.PHONY: bench bench-quick
bench: setup
	$(ZONED) bench all

bench-quick: setup
	$(ZONED) bench all --quick

bench-startup: setup
	$(ZONED) bench startup

bench-density: setup
	$(ZONED) bench density

clean:
	rm -rf build *.egg-info zoned/_native.* zoned/_seccomp.* zoned/libexec $(STAMP) \
		zoned/__pycache__/modules.*.pack

distclean: clean
	rm -rf $(VENV)
