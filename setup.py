"""Only here to hook the cffi extension into setuptools; metadata lives in pyproject.toml."""
from setuptools import setup

setup(cffi_modules=["csrc/build.py:ffibuilder", "csrc/build_seccomp.py:ffibuilder"])
