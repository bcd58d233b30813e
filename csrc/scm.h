/*
 * One fd passed with a message (SCM_RIGHTS): the control block zoned-logger and
 * zoned-monitor fill the same way. Header-only: both are single-file static programs.
 */
#ifndef ZONED_SCM_H
#define ZONED_SCM_H
#include <string.h>
#include <sys/socket.h>

/* Make `mh` carry `fd`, its control data in `cbuf` (CMSG_SPACE(sizeof(int)) bytes). */
static void attach_fd(struct msghdr *mh, char *cbuf, size_t cbuf_len, int fd)
{
	struct cmsghdr *c;

	memset(cbuf, 0, cbuf_len);
	mh->msg_control = cbuf;
	mh->msg_controllen = cbuf_len;
	c = CMSG_FIRSTHDR(mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
}
#endif
