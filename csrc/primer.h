/* csrc/primer.c: the cgroup-move primer's loop, run without the GIL (zoned.cgroups.prime). */
int z_primer_loop(const char *procs, int every_ms, int for_ms, int stop_fd);
