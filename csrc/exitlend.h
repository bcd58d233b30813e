/* csrc/exitlend.c: exit, leaving the freeing of our memory to a process that outlives us. */
void z_exit_lending_memory(int status, const int *keep, int nkeep);
