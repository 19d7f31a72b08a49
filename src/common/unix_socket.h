/* Listening Unix sockets: stale socket files are replaced, live ones are not. */
#ifndef BDF_COMMON_UNIX_SOCKET_H
#define BDF_COMMON_UNIX_SOCKET_H

#include <stddef.h>
#include <sys/types.h>

/* Bind and listen on PATH (non-blocking, close-on-exec) with permissions MODE
 * (0: as the process umask makes them). Returns the fd, or -1 and ERR. */
int unix_socket_listen(const char *path, mode_t mode, char *err, size_t errlen);
/* The same for a socket of TYPE (SOCK_STREAM, SOCK_SEQPACKET). */
int unix_socket_listen_type(const char *path, int type, mode_t mode, char *err, size_t errlen);

/* Connect to PATH; the fd, or a negative errno. */
int unix_socket_connect(const char *path);

#endif
