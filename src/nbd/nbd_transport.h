/* The byte stream under an NBD connection (nbd-transport): the protocol code
 * reads and writes through these operations only, so that a TLS session can
 * take the socket's place after NBD_OPT_STARTTLS without the handshake or the
 * transmission code knowing. The plain socket is nbd_socket.c. */
#ifndef BDF_NBD_TRANSPORT_H
#define BDF_NBD_TRANSPORT_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

struct nbd_transport;

/* Threads: recv is called by one thread at a time (the connection's read
 * lock), sendv by one at a time (the write lock), and the two may run at once.
 * shutdown may come from any thread at any time and must make a blocked recv
 * or sendv return. close is called once, when no other call can come. */
struct nbd_transport_ops {
	const char *name;
	/* Up to LEN bytes into BUF: how many (> 0), 0 at end of stream, or a
	 * negative errno (-EINTR: call again). */
	ssize_t (*recv)(struct nbd_transport *t, void *buf, size_t len);
	/* Some of IOV[0..N-1]: how many bytes went (> 0), or a negative errno. */
	ssize_t (*sendv)(struct nbd_transport *t, const struct iovec *iov, int n);
	/* Bytes the transport holds that recv returns without touching the
	 * socket (a TLS record already decrypted): poll() on fd does not see
	 * them. NULL: none ever. */
	size_t (*pending)(struct nbd_transport *t);
	/* shutdown(2)'s SHUT_RD, SHUT_WR or SHUT_RDWR. */
	void (*shutdown)(struct nbd_transport *t, int how);
	/* Release everything, the socket included. */
	void (*close)(struct nbd_transport *t);
};

struct nbd_transport {
	const struct nbd_transport_ops *ops;
	/* The socket underneath: what poll() waits on, and where socket
	 * options (SO_SNDTIMEO, SO_SNDBUF) are set, whatever the transport. */
	int fd;
	void *priv;
};

/* The plain socket FD (the transport owns it from now on). */
void nbd_socket_transport(struct nbd_transport *t, int fd);

#endif
