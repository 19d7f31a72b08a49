/* The dm userspace-log transports (see ulog_transport.h): one thread per
 * transport polls its sockets and answers each packet in turn, as cmirrord
 * does; a request that waits for the disk (a flush) holds the others back,
 * which the kernel, one request per log at a time, does not notice. */
#include "dirtylog/ulog_transport.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/connector.h>
#include <linux/netlink.h>

#include "common/log.h"
#include "common/unix_socket.h"
#include "dirtylog/ulog_server.h"

#define CONNS_MAX 64
/* Room to see how far past the cap a packet goes (recv's MSG_TRUNC tells
 * the rest). */
#define PKT_BUF 4096

struct ulog_transport {
	struct ulog_server *srv;
	bool netlink;
	int fd;			/* the listening socket, or the netlink one */
	char *path;		/* the listening socket's path */
	int wake[2];		/* a byte here stops the thread */
	bool running;
	int conns[CONNS_MAX];
	size_t n_conns;
	pthread_t thread;
	unsigned char in[PKT_BUF], out[PKT_BUF];
};

/* One packet from a SEQPACKET client: answer it on the same socket. 0, or
 * -1 when the client is gone. */
static int serve_packet(struct ulog_transport *t, int fd)
{
	ssize_t n = recv(fd, t->in, sizeof(t->in), MSG_TRUNC | MSG_DONTWAIT);
	size_t len;

	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	if (n == 0)
		return -1;
	if ((size_t)n > sizeof(t->in)) {
		log_warn("dirty log: a packet of %zd bytes, over the %u-byte message cap", n, ULOG_MSG_MAX);
		n = sizeof(t->in); /* the header still says whom to answer */
	}
	len = ulog_cn_handle(t->srv, t->in, (size_t)n, t->out, sizeof(t->out));
	if (len && send(fd, t->out, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN)
		return -1;
	return 0;
}

/* One netlink message: a cn_msg from the kernel (or, as root, from anyone in
 * the group); the answer goes back to its sender, the kernel being port 0. */
static void serve_netlink(struct ulog_transport *t)
{
	struct sockaddr_nl from, to = { .nl_family = AF_NETLINK };
	socklen_t flen = sizeof(from);
	struct nlmsghdr *nlh = (struct nlmsghdr *)t->in, *rh = (struct nlmsghdr *)t->out;
	ssize_t n = recvfrom(t->fd, t->in, sizeof(t->in), MSG_DONTWAIT | MSG_TRUNC, (struct sockaddr *)&from, &flen);
	size_t len;

	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR && errno != ENOBUFS)
			log_warn("dirty log: netlink receive: %s", strerror(errno));
		return;
	}
	if ((size_t)n > sizeof(t->in) || (size_t)n < NLMSG_HDRLEN || nlh->nlmsg_len < NLMSG_HDRLEN ||
	    nlh->nlmsg_len > (size_t)n) {
		log_warn("dirty log: a malformed netlink message of %zd bytes", n);
		return;
	}
	if (nlh->nlmsg_type != NLMSG_DONE) {
		log_warn("dirty log: a netlink message of type %u, not NLMSG_DONE", nlh->nlmsg_type);
		return;
	}
	len = ulog_cn_handle(t->srv, NLMSG_DATA(nlh), nlh->nlmsg_len - NLMSG_HDRLEN, NLMSG_DATA(rh),
			     sizeof(t->out) - NLMSG_HDRLEN);
	if (!len)
		return;
	memset(rh, 0, NLMSG_HDRLEN);
	rh->nlmsg_len = NLMSG_LENGTH(len);
	rh->nlmsg_type = NLMSG_DONE;
	rh->nlmsg_pid = (uint32_t)getpid();
	to.nl_pid = from.nl_pid;
	if (sendto(t->fd, rh, rh->nlmsg_len, 0, (struct sockaddr *)&to, sizeof(to)) < 0)
		log_warn("dirty log: netlink reply to port %u: %s", from.nl_pid, strerror(errno));
}

static void accept_conn(struct ulog_transport *t)
{
	int fd = accept4(t->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0)
		return;
	if (t->n_conns == CONNS_MAX) {
		log_warn("dirty log: unix:%s: %u clients already; one more refused", t->path, CONNS_MAX);
		close(fd);
		return;
	}
	t->conns[t->n_conns++] = fd;
}

static void *transport_loop(void *arg)
{
	struct ulog_transport *t = arg;
	struct pollfd pfd[CONNS_MAX + 2];

	for (;;) {
		size_t n = 0, base;

		pfd[n++] = (struct pollfd){ .fd = t->wake[0], .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = t->fd, .events = POLLIN };
		base = n;
		for (size_t i = 0; i < t->n_conns; i++)
			pfd[n++] = (struct pollfd){ .fd = t->conns[i], .events = POLLIN };
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_error("dirty log: poll: %s", strerror(errno));
			break;
		}
		if (pfd[0].revents)
			break;
		/* Clients first, from the last, so that removing one keeps the
		 * indexes of those still to look at. */
		for (size_t i = n; i-- > base;) {
			size_t c = i - base;

			if (!pfd[i].revents)
				continue;
			if ((pfd[i].revents & POLLIN) ? serve_packet(t, t->conns[c]) < 0 : true) {
				close(t->conns[c]);
				t->conns[c] = t->conns[--t->n_conns];
			}
		}
		if (pfd[1].revents) {
			if (t->netlink)
				serve_netlink(t);
			else
				accept_conn(t);
		}
	}
	return NULL;
}

int ulog_transport_start(struct ulog_transport *t)
{
	int r;

	if (pipe2(t->wake, O_CLOEXEC) < 0) {
		r = -errno;
		log_error("dirty log: pipe: %s", strerror(errno));
		return r;
	}
	r = pthread_create(&t->thread, NULL, transport_loop, t);
	if (r) {
		close(t->wake[0]);
		close(t->wake[1]);
		log_error("dirty log: cannot start a thread: %s", strerror(r));
		return -r;
	}
	t->running = true;
	return 0;
}

int ulog_seqpacket_open(struct ulog_server *s, const char *path, struct ulog_transport **out)
{
	struct ulog_transport *t = calloc(1, sizeof(*t));
	char err[512], cwd[4096];

	/* Absolute, to unlink it at the end from wherever we are then. */
	if (path[0] != '/' && !getcwd(cwd, sizeof(cwd))) {
		log_error("dirty log: --dm-ulog-listen %s: getcwd: %s", path, strerror(errno));
		free(t);
		return -errno;
	}
	if (!t || (path[0] == '/' ? !(t->path = strdup(path)) : asprintf(&t->path, "%s/%s", cwd, path) < 0)) {
		free(t);
		return -ENOMEM;
	}
	t->srv = s;
	t->fd = unix_socket_listen_type(path, SOCK_SEQPACKET, 0600, err, sizeof(err));
	if (t->fd < 0) {
		log_error("dirty log: %s", err);
		free(t->path);
		free(t);
		return -EINVAL;
	}
	*out = t;
	return 0;
}

/* Whether the kernel has a dm-log-userspace to talk to us: it registers its
 * callback with the connector, which lists it. */
static bool kernel_has_dm_ulog(void)
{
	char line[256];
	bool found = false;
	FILE *f = fopen("/proc/net/connector", "re");

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		unsigned idx, val;
		char name[64];

		if (sscanf(line, "%63s %u:%u", name, &idx, &val) == 3 && idx == CN_IDX_DM &&
		    val == CN_VAL_DM_USERSPACE_LOG)
			found = true;
	}
	fclose(f);
	return found;
}

int ulog_connector_open(struct ulog_server *s, struct ulog_transport **out)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_groups = CN_IDX_DM };
	struct ulog_transport *t = calloc(1, sizeof(*t));
	int group = CN_IDX_DM, r;

	if (!t)
		return -ENOMEM;
	t->srv = s;
	t->netlink = true;
	t->fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_CONNECTOR);
	if (t->fd < 0 || bind(t->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    setsockopt(t->fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof(group)) < 0) {
		r = -errno;
		log_error("dirty log: the netlink connector (--dm-ulog): %s%s", strerror(errno),
			  r == -EPROTONOSUPPORT ? " (a kernel without CONFIG_CONNECTOR)" : "");
		if (t->fd >= 0)
			close(t->fd);
		free(t);
		return r;
	}
	if (!kernel_has_dm_ulog())
		log_warn("dirty log: listening on the netlink connector, but this kernel has no "
			 "dm-log-userspace (modprobe dm-log-userspace): only user-space senders will reach us");
	*out = t;
	return 0;
}

void ulog_transport_stop(struct ulog_transport *t)
{
	if (!t)
		return;
	if (t->running) {
		if (write(t->wake[1], "", 1) != 1)
			log_warn("dirty log: cannot wake the transport thread: %s", strerror(errno));
		pthread_join(t->thread, NULL);
		close(t->wake[0]);
		close(t->wake[1]);
	}
	for (size_t i = 0; i < t->n_conns; i++)
		close(t->conns[i]);
	close(t->fd);
	if (t->path) {
		unlink(t->path);
		free(t->path);
	}
	free(t);
}
