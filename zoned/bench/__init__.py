"""`zoned bench`: zones, VMs, runc and podman measured side by side on this host.

One small module per measurement (startup, density, idle, migrate, network), the runners
of each backend (backends, podman), the host's facts (facts), /proc and cgroup readings
(procfs), statistics (stats), leftover checks (leftovers), the report (report) and the
plots (plots; the only module that imports matplotlib). session ties them together for
the CLI (zoned.cli.bench) and for the scripts in bench/.
"""
