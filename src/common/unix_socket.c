/* Unix sockets (see unix_socket.h). */
#include "common/unix_socket.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define BACKLOG 128

static int fill_addr(struct sockaddr_un *sa, const char *path)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (!*path || strlen(path) >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	strcpy(sa->sun_path, path);
	return 0;
}

/* A socket file left by a process that died: nothing answers on it. */
static bool stale(const struct sockaddr_un *sa, int type)
{
	struct stat st;
	int fd, r;

	if (stat(sa->sun_path, &st) < 0 || !S_ISSOCK(st.st_mode))
		return false;
	fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	close(fd);
	return r < 0 && errno == ECONNREFUSED;
}

int unix_socket_listen(const char *path, mode_t mode, char *err, size_t errlen)
{
	return unix_socket_listen_type(path, SOCK_STREAM, mode, err, errlen);
}

int unix_socket_listen_type(const char *path, int type, mode_t mode, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	mode_t old = 0;
	int fd, r, e;

	if (fill_addr(&sa, path) < 0) {
		snprintf(err, errlen, "unix:%s: path must be 1 to %zu bytes", path, sizeof(sa.sun_path) - 1);
		return -1;
	}
	fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	/* The umask makes the socket's mode right from the start: no window in
	 * which another user could connect. */
	if (mode)
		old = umask(~mode & 0777);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	if (r < 0 && errno == EADDRINUSE && stale(&sa, type)) {
		unlink(sa.sun_path);
		r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	}
	e = errno;
	if (mode)
		umask(old);
	if (r < 0) {
		struct stat st;
		const char *why = strerror(e);

		if (e == EADDRINUSE)
			why = stat(path, &st) == 0 && !S_ISSOCK(st.st_mode) ?
				"a file that is not a socket is in the way" :
				"another server is listening there";
		snprintf(err, errlen, "cannot listen on unix:%s: %s", path, why);
		close(fd);
		return -1;
	}
	if (listen(fd, BACKLOG) < 0) {
		snprintf(err, errlen, "cannot listen on unix:%s: %s", path, strerror(errno));
		unlink(path);
		close(fd);
		return -1;
	}
	return fd;
}

int unix_socket_connect(const char *path)
{
	struct sockaddr_un sa;
	int fd;

	if (fill_addr(&sa, path) < 0)
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}
