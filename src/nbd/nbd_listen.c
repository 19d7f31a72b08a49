/* Listening sockets for NBD clients (see nbd_listen.h). */
#include "nbd/nbd_listen.h"

#include "common/log.h"
#include "common/unix_socket.h"
#include "nbd/nbd_server.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define LISTEN_BACKLOG 128

void listen_addr_free(struct listen_addr *a)
{
	free(a->path);
	free(a->host);
	free(a->port);
	memset(a, 0, sizeof(*a));
}

static bool valid_port(const char *p)
{
	char *end;
	long v;

	if (!*p)
		return false;
	v = strtol(p, &end, 10);
	return *end == '\0' && v >= 1 && v <= 65535;
}

int listen_addr_parse(const char *addr, struct listen_addr *a, char *err, size_t errlen)
{
	memset(a, 0, sizeof(*a));
	if (strncmp(addr, "unix:", 5) == 0) {
		const char *path = addr + 5;

		if (!*path || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			snprintf(err, errlen, "'%s': expected unix:PATH with a path of 1 to %zu bytes",
				 addr, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
			return -1;
		}
		a->kind = LISTEN_UNIX;
		a->path = strdup(path);
		return a->path ? 0 : -1;
	}
	if (strncmp(addr, "tcp:", 4) == 0) {
		const char *s = addr + 4, *colon, *host_end;
		char *host;

		if (*s == '[') { /* tcp:[::1]:PORT */
			host_end = strchr(s, ']');
			if (!host_end || host_end[1] != ':')
				goto bad_tcp;
			host = strndup(s + 1, (size_t)(host_end - s - 1));
			colon = host_end + 1;
		} else {
			colon = strrchr(s, ':');
			host = colon ? strndup(s, (size_t)(colon - s)) : strdup("");
		}
		if (!host)
			return -1;
		if (!valid_port(colon ? colon + 1 : s)) {
			free(host);
			goto bad_tcp;
		}
		a->kind = LISTEN_TCP;
		/* No host: loopback only; listening wider is an explicit choice. */
		a->host = *host ? host : (free(host), strdup("127.0.0.1"));
		a->port = strdup(colon ? colon + 1 : s);
		return a->host && a->port ? 0 : -1;
	}
	snprintf(err, errlen, "'%s': expected unix:PATH or tcp:[HOST:]PORT", addr);
	return -1;
bad_tcp:
	snprintf(err, errlen, "'%s': expected tcp:HOST:PORT, tcp:PORT or tcp:[IPV6]:PORT "
		 "with a port from 1 to 65535", addr);
	return -1;
}

static int open_unix(const struct listen_addr *a, struct listener *l, char *err, size_t errlen)
{
	/* Permissions as the umask makes them, as qemu-nbd and nbdkit do. */
	int fd = unix_socket_listen(a->path, 0, err, errlen);

	if (fd < 0)
		return -1;
	l->fd = fd;
	l->unix_path = strdup(a->path);
	snprintf(l->desc, sizeof(l->desc), "unix:%s", a->path);
	return 0;
}

static int open_tcp(const struct listen_addr *a, struct listener *l, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res;
	int fd = -1, r, one = 1, e = 0;

	r = getaddrinfo(a->host, a->port, &hints, &res);
	if (r != 0) {
		snprintf(err, errlen, "cannot listen on tcp:%s:%s: %s", a->host, a->port, gai_strerror(r));
		return -1;
	}
	/* The first address that binds; HOST names one interface in practice. */
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
		if (fd < 0) {
			e = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, LISTEN_BACKLOG) == 0)
			break;
		e = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(err, errlen, "cannot listen on tcp:%s:%s: %s", a->host, a->port, strerror(e));
		return -1;
	}
	l->fd = fd;
	l->unix_path = NULL;
	snprintf(l->desc, sizeof(l->desc), strchr(a->host, ':') ? "tcp:[%s]:%s" : "tcp:%s:%s",
		 a->host, a->port);
	return 0;
}

int listener_open(const struct listen_addr *a, struct listener *l, char *err, size_t errlen)
{
	return a->kind == LISTEN_UNIX ? open_unix(a, l, err, errlen) : open_tcp(a, l, err, errlen);
}

void listener_close(struct listener *l)
{
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	if (l->unix_path) {
		unlink(l->unix_path);
		free(l->unix_path);
		l->unix_path = NULL;
	}
}

bool listener_is_local(const struct listener *l)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(l->fd, (struct sockaddr *)&ss, &len) < 0)
		return false;
	switch (ss.ss_family) {
	case AF_UNIX:
		return true;
	case AF_INET:
		return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
	case AF_INET6: {
		const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;

		if (IN6_IS_ADDR_LOOPBACK(a))
			return true;
		return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
	}
	default:
		return false;
	}
}

/* Percent-encode S into OUT (RFC 3986: unreserved characters and '/' kept). */
static bool uri_encode(const char *s, char *out, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		    strchr("-._~/", ch)) {
			if (o + 1 >= len)
				return false;
			out[o++] = (char)ch;
		} else {
			if (o + 3 >= len)
				return false;
			out[o++] = '%';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 15];
		}
	}
	if (o >= len)
		return false;
	out[o] = '\0';
	return true;
}

int listener_export_uri(const struct listener *l, const char *name, char *buf, size_t len)
{
	const char *scheme = l->tls == NBD_TLS_REQUIRE ? "nbds" : "nbd";
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN], path[3 * PATH_MAX + 1], ename[3 * 4096 + 1];
	int n;

	if (!uri_encode(name, ename, sizeof(ename)))
		return -1;
	if (getsockname(l->fd, (struct sockaddr *)&ss, &sl) < 0)
		return -1;
	switch (ss.ss_family) {
	case AF_UNIX: {
		const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
		size_t plen = sl - offsetof(struct sockaddr_un, sun_path);
		char raw[sizeof(un->sun_path) + 1];

		/* Unnamed, or abstract (a leading NUL): no path to name. */
		if (sl <= offsetof(struct sockaddr_un, sun_path) || un->sun_path[0] == '\0')
			return -1;
		char cwd[PATH_MAX], *abs = NULL;
		bool ok;

		memcpy(raw, un->sun_path, plen < sizeof(un->sun_path) ? plen : sizeof(un->sun_path));
		raw[plen < sizeof(un->sun_path) ? plen : sizeof(un->sun_path)] = '\0';
		/* A relative path is relative to where we started: made absolute
		 * while we are still there (before the daemon changes to /). */
		if (raw[0] != '/' && (!getcwd(cwd, sizeof(cwd)) || asprintf(&abs, "%s/%s", cwd, raw) < 0))
			return -1;
		ok = uri_encode(abs ? abs : raw, path, sizeof(path));
		free(abs);
		if (!ok)
			return -1;
		n = snprintf(buf, len, "%s+unix:///%s?socket=%s", scheme, ename, path);
		break;
	}
	case AF_INET: {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		if (in->sin_addr.s_addr == htonl(INADDR_ANY))
			in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		n = snprintf(buf, len, "%s://%s:%u/%s", scheme, host, ntohs(in->sin_port), ename);
		break;
	}
	case AF_INET6: {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
			in6->sin6_addr = in6addr_loopback;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		n = snprintf(buf, len, "%s://[%s]:%u/%s", scheme, host, ntohs(in6->sin6_port), ename);
		break;
	}
	default:
		return -1;
	}
	return n > 0 && (size_t)n < len ? 0 : -1;
}

int listener_uri(const struct listener *l, char *buf, size_t len)
{
	return listener_export_uri(l, "", buf, len);
}

enum nbd_tls_mode listener_default_tls(const struct listener *l)
{
	return listener_is_local(l) ? NBD_TLS_OFF : NBD_TLS_REQUIRE;
}

static void peer_name(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[NI_MAXHOST], serv[NI_MAXSERV];

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0 || ss.ss_family == AF_UNIX ||
	    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), serv, sizeof(serv),
			NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		snprintf(buf, len, "unix");
		return;
	}
	snprintf(buf, len, "%.64s:%.8s", host, serv);
}

void listener_accept(struct listener *l, struct nbd_server *srv)
{
	char peer[96];
	int fd, one = 1;

	fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
			log_warn("accept on %s: %s", l->desc, strerror(errno));
			usleep(100 * 1000); /* do not spin while out of descriptors */
		}
		return;
	}
	peer_name(fd, peer, sizeof(peer));
	if (strcmp(peer, "unix") != 0)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	nbd_server_serve(srv, fd, peer, l->tls);
}

int listeners_from_systemd(struct listener **out)
{
	const char *pid_s = getenv("LISTEN_PID"), *fds_s = getenv("LISTEN_FDS");
	struct listener *v;
	long n;

	*out = NULL;
	if (!pid_s || !fds_s || strtol(pid_s, NULL, 10) != (long)getpid())
		return 0;
	n = strtol(fds_s, NULL, 10);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (n <= 0 || n > 64)
		return 0;
	v = calloc((size_t)n, sizeof(*v));
	if (!v)
		return -1;
	for (long i = 0; i < n; i++) {
		int fd = 3 + (int)i; /* SD_LISTEN_FDS_START */

		fcntl(fd, F_SETFD, FD_CLOEXEC);
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		v[i].fd = fd;
		snprintf(v[i].desc, sizeof(v[i].desc), "systemd fd %d", fd);
	}
	*out = v;
	return (int)n;
}
