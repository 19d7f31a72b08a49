/* Whole reads and writes over the short counts and EINTR that read(2),
 * write(2) and their kin may return, and what O_DIRECT asks of a write.
 * Small helpers with no project knowledge: they never log; errors are
 * negative errno values, for the callers to word. */
#ifndef BDF_COMMON_IO_H
#define BDF_COMMON_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* One read(2), retried on EINTR: the bytes read (0 at EOF), or -errno. */
ssize_t io_read_some(int fd, void *buf, size_t len);

/* Read LEN bytes from FD's position, or at OFF, over short counts and EINTR. The bytes read: LEN, or fewer when EOF came first,
 * or -errno. What a short count means is the caller's to say: a file that
 * shrank, a sparse file read past its end, a truncated record. */
ssize_t io_read_all(int fd, void *buf, size_t len);
ssize_t io_pread_all(int fd, void *buf, size_t len, uint64_t off);

/* Write LEN bytes to FD's position (io_write_all), to a socket without
 * SIGPIPE (io_send_all: a peer gone is -EPIPE), or at OFF (io_pwrite_all),
 * over short counts and EINTR. 0, or -errno; a call that writes nothing
 * is -EIO rather than a loop that never ends.
 * Whole reads and writes take at most SSIZE_MAX bytes (-EINVAL). */
int io_write_all(int fd, const void *buf, size_t len);
int io_send_all(int fd, const void *buf, size_t len);
/* RWF_FLAGS go to pwritev2 (0: a plain pwrite). With RWF_DSYNC the data is
 * durable on return: where the file takes no such flag (-EOPNOTSUPP), the
 * whole write is done again without it and followed by fdatasync. */
int io_pwrite_all(int fd, const void *buf, size_t len, uint64_t off, int rwf_flags);

/* O_DIRECT: buffers, lengths and offsets aligned to IO_DIRECT_ALIGN, which
 * is as much as any logical block size we meet asks. */
#define IO_DIRECT_ALIGN 4096u
/* Smaller writes go through the page cache: a direct write waits for the
 * disk, and scattered small pieces would each pay that wait. */
#define IO_DIRECT_MIN (256u << 10)

/* BUF, LEN and OFF meet O_DIRECT's alignment. */
bool io_direct_aligned(const void *buf, size_t len, uint64_t off);
/* LEN bytes aligned for O_DIRECT, for free(); NULL when out of memory. */
void *io_alloc_aligned(size_t len);
/* FD (a file or block device) opened again, write-only, with O_DIRECT and
 * O_CLOEXEC: the new fd, or -errno (tmpfs and others refuse with -EINVAL). */
int io_reopen_direct(int fd);
/* io_pwrite_all through DIRECTFD (io_reopen_direct's, or < 0 for none) when
 * the piece is aligned and at least IO_DIRECT_MIN, else through FD. */
int io_pwrite_direct(int fd, int directfd, const void *buf, size_t len, uint64_t off);

#endif
