/* Whole reads and writes, and O_DIRECT's rules (see io.h). One loop serves
 * every call: short counts go on where they stopped, EINTR is tried again. */
#include "common/io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

enum io_op {
	IO_READ,
	IO_PREAD,
	IO_WRITE,
	IO_SEND,
	IO_PWRITE,
};

static ssize_t io_once(enum io_op op, int fd, char *p, size_t len, uint64_t off, int rwf)
{
	switch (op) {
	case IO_READ:
		return read(fd, p, len);
	case IO_PREAD:
		return pread(fd, p, len, (off_t)off);
	case IO_WRITE:
		return write(fd, p, len);
	case IO_SEND:
		return send(fd, p, len, MSG_NOSIGNAL);
	case IO_PWRITE:
		if (rwf) {
			struct iovec iov = { .iov_base = p, .iov_len = len };

			return pwritev2(fd, &iov, 1, (off_t)off, rwf);
		}
		return pwrite(fd, p, len, (off_t)off);
	}
	errno = EINVAL;
	return -1;
}

/* LEN bytes, or fewer when a read meets EOF; -errno. A write that moves
 * nothing will move nothing next time either: -EIO, not a spin. BUF is only
 * written to by the reads. */
static ssize_t io_loop(enum io_op op, int fd, void *buf, size_t len, uint64_t off, int rwf)
{
	bool reading = op == IO_READ || op == IO_PREAD;
	char *p = buf;
	size_t done = 0;

	if (len > SSIZE_MAX)
		return -EINVAL;
	while (done < len) {
		ssize_t n = io_once(op, fd, p + done, len - done, off + done, rwf);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) {
			if (reading)
				break;
			return -EIO;
		}
		done += (size_t)n;
	}
	return (ssize_t)done;
}

ssize_t io_read_some(int fd, void *buf, size_t len)
{
	for (;;) {
		ssize_t n = read(fd, buf, len);

		if (n >= 0)
			return n;
		if (errno != EINTR)
			return -errno;
	}
}

ssize_t io_read_all(int fd, void *buf, size_t len)
{
	return io_loop(IO_READ, fd, buf, len, 0, 0);
}

ssize_t io_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	return io_loop(IO_PREAD, fd, buf, len, off, 0);
}

int io_write_all(int fd, const void *buf, size_t len)
{
	ssize_t r = io_loop(IO_WRITE, fd, (void *)buf, len, 0, 0);

	return r < 0 ? (int)r : 0;
}

int io_send_all(int fd, const void *buf, size_t len)
{
	ssize_t r = io_loop(IO_SEND, fd, (void *)buf, len, 0, 0);

	return r < 0 ? (int)r : 0;
}

int io_pwrite_all(int fd, const void *buf, size_t len, uint64_t off, int rwf_flags)
{
	ssize_t r = io_loop(IO_PWRITE, fd, (void *)buf, len, off, rwf_flags);

	/* Said at the first call, before anything is written; had some of it
	 * been, writing it again is harmless. */
	if (r == -EOPNOTSUPP && (rwf_flags & RWF_DSYNC)) {
		r = io_loop(IO_PWRITE, fd, (void *)buf, len, off, rwf_flags & ~RWF_DSYNC);
		if (r >= 0 && fdatasync(fd) < 0)
			r = -errno;
	}
	return r < 0 ? (int)r : 0;
}

bool io_direct_aligned(const void *buf, size_t len, uint64_t off)
{
	return (uintptr_t)buf % IO_DIRECT_ALIGN == 0 && len % IO_DIRECT_ALIGN == 0 && off % IO_DIRECT_ALIGN == 0;
}

void *io_alloc_aligned(size_t len)
{
	void *p;

	return posix_memalign(&p, IO_DIRECT_ALIGN, len) == 0 ? p : NULL;
}

/* Through /proc: the fd may name a file that has no path any more, or one
 * the caller opened by a path that now names something else. */
int io_reopen_direct(int fd)
{
	char path[32];
	int d;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	d = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
	return d < 0 ? -errno : d;
}

int io_pwrite_direct(int fd, int directfd, const void *buf, size_t len, uint64_t off)
{
	if (directfd >= 0 && len >= IO_DIRECT_MIN && io_direct_aligned(buf, len, off))
		fd = directfd;
	return io_pwrite_all(fd, buf, len, off, 0);
}
