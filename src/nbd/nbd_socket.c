/* The plain socket transport (nbd-transport): recv, sendmsg and shutdown on
 * the accepted socket, nothing buffered of its own. */
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbd/nbd_transport.h"

static ssize_t sock_recv(struct nbd_transport *t, void *buf, size_t len)
{
	ssize_t r = recv(t->fd, buf, len, 0);

	return r < 0 ? -errno : r;
}

static ssize_t sock_sendv(struct nbd_transport *t, const struct iovec *iov, int n)
{
	struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n };
	/* A client that hung up is an error to return, not a SIGPIPE. */
	ssize_t r = sendmsg(t->fd, &msg, MSG_NOSIGNAL);

	return r < 0 ? -errno : r;
}

static void sock_shutdown(struct nbd_transport *t, int how)
{
	shutdown(t->fd, how);
}

static void sock_close(struct nbd_transport *t)
{
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
}

static const struct nbd_transport_ops socket_ops = {
	.name = "socket",
	.recv = sock_recv,
	.sendv = sock_sendv,
	.shutdown = sock_shutdown,
	.close = sock_close,
};

void nbd_socket_transport(struct nbd_transport *t, int fd)
{
	t->ops = &socket_ops;
	t->fd = fd;
	t->priv = NULL;
}
