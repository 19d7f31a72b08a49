/* Unit tests: the whole-read and whole-write helpers (common/io.c) over pipes,
 * sockets and files: pieces that come short, reads and writes a signal
 * interrupts (a handler without SA_RESTART), EOF in the middle, errors as
 * -errno; and O_DIRECT's rules: which writes go direct, and one that does
 * (skipped where the filesystem refuses O_DIRECT). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/io.h"

static atomic_uint hits;

static void on_signal(int sig)
{
	(void)sig;
	atomic_fetch_add(&hits, 1);
}

/* SIGUSR1 interrupts a blocked read or write instead of restarting it. */
static int setup(void **state)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigemptyset(&sa.sa_mask);
	return sigaction(SIGUSR1, &sa, NULL);
}

static void fill(char *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)(i * 31 + seed + i / 251);
}

/* A temporary file in DIR (or $TMPDIR, or /tmp), already unlinked. */
static int temp_file(const char *dir)
{
	char path[256];
	int fd;

	if (!dir)
		dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(path, sizeof(path), "%s/bdf-test-io.XXXXXX", dir);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	return fd;
}

/* ---- threads: they only report; the asserts are the main thread's ---- */

struct peer {
	pthread_t thread;
	pthread_t target; /* the thread the signals go to */
	int fd;
	char *buf;
	size_t len, piece, got;
	unsigned signals;
	atomic_bool stop;
};

/* Signal TARGET until told to stop: a blocked call of the target's is sure
 * to be interrupted, whenever it blocks. */
static void *nag(void *opaque)
{
	struct peer *p = opaque;

	while (!atomic_load(&p->stop)) {
		pthread_kill(p->target, SIGUSR1);
		usleep(2000);
	}
	return NULL;
}

/* Signal the target SIGNALS times, then write BUF in PIECEs, a signal after
 * each, and close. */
static void *feed(void *opaque)
{
	struct peer *p = opaque;

	for (unsigned i = 0; i < p->signals; i++) {
		pthread_kill(p->target, SIGUSR1);
		usleep(2000);
	}
	for (size_t off = 0; off < p->len; off += p->piece) {
		size_t n = p->len - off < p->piece ? p->len - off : p->piece;

		if (write(p->fd, p->buf + off, n) != (ssize_t)n)
			break;
		pthread_kill(p->target, SIGUSR1);
		usleep(500);
	}
	close(p->fd);
	return NULL;
}

/* Read up to LEN bytes in PIECEs, slowly, a signal after each, until EOF
 * (LEN is one more than the writer sends: a byte too many shows). */
static void *drain(void *opaque)
{
	struct peer *p = opaque;

	while (p->got < p->len) {
		size_t n = p->len - p->got < p->piece ? p->len - p->got : p->piece;
		ssize_t r = read(p->fd, p->buf + p->got, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		p->got += (size_t)r;
		pthread_kill(p->target, SIGUSR1);
		usleep(200);
	}
	return NULL;
}

static void start(struct peer *p, void *(*fn)(void *))
{
	p->target = pthread_self();
	atomic_store(&p->stop, false);
	assert_int_equal(pthread_create(&p->thread, NULL, fn, p), 0);
}

/* ---- tests ---- */

/* The setup the others rely on: a bare read(2) is interrupted. */
static void signals_interrupt(void **state)
{
	struct peer p = { 0 };
	int fds[2], err;
	ssize_t r;
	char c;

	assert_int_equal(pipe(fds), 0);
	start(&p, nag);
	r = read(fds[0], &c, 1);
	err = errno;
	atomic_store(&p.stop, true);
	pthread_join(p.thread, NULL);
	assert_int_equal(r, -1);
	assert_int_equal(err, EINTR);
	close(fds[0]);
	close(fds[1]);
}

static void read_short_and_interrupted(void **state)
{
	char want[4096], got[sizeof(want) + 1];
	struct peer p = { .buf = want, .len = sizeof(want), .piece = 100, .signals = 5 };
	unsigned before = atomic_load(&hits);
	int fds[2];

	fill(want, sizeof(want), 1);
	assert_int_equal(pipe(fds), 0);
	p.fd = fds[1];
	start(&p, feed);
	assert_int_equal(io_read_all(fds[0], got, sizeof(want)), sizeof(want));
	pthread_join(p.thread, NULL);
	assert_memory_equal(got, want, sizeof(want));
	assert_true(atomic_load(&hits) > before); /* signals pending at once merge: no count */
	/* the writer is gone: EOF */
	assert_int_equal(io_read_all(fds[0], got, sizeof(got)), 0);
	assert_int_equal(io_read_some(fds[0], got, sizeof(got)), 0);
	close(fds[0]);
}

static void read_eof_in_the_middle(void **state)
{
	char buf[100];
	int fds[2];

	assert_int_equal(pipe(fds), 0);
	assert_int_equal(write(fds[1], "0123456789", 10), 10);
	close(fds[1]);
	assert_int_equal(io_read_all(fds[0], buf, sizeof(buf)), 10);
	assert_memory_equal(buf, "0123456789", 10);
	assert_int_equal(io_read_all(fds[0], buf, sizeof(buf)), 0);
	close(fds[0]);
}

/* A pipe that holds one page, drained slowly: the write blocks again and
 * again, and the signals cut it into short counts and EINTRs. */
static void write_short_and_interrupted(void **state)
{
	const size_t len = 256 << 10;
	char *want = malloc(len), *got = malloc(len + 1);
	struct peer p = { .buf = got, .len = len + 1, .piece = 1000 };
	unsigned before = atomic_load(&hits);
	int fds[2];

	assert_non_null(want);
	assert_non_null(got);
	fill(want, len, 2);
	assert_int_equal(pipe(fds), 0);
	assert_true(fcntl(fds[1], F_SETPIPE_SZ, 4096) >= 0);
	p.fd = fds[0];
	start(&p, drain);
	assert_int_equal(io_write_all(fds[1], want, len), 0);
	close(fds[1]);
	pthread_join(p.thread, NULL);
	assert_int_equal(p.got, len);
	assert_memory_equal(got, want, len);
	assert_true(atomic_load(&hits) > before);
	close(fds[0]);
	free(want);
	free(got);
}

static void send_short_and_interrupted(void **state)
{
	const size_t len = 256 << 10;
	char *want = malloc(len), *got = malloc(len + 1);
	struct peer p = { .buf = got, .len = len + 1, .piece = 1000 };
	int sv[2], small = 4096;

	assert_non_null(want);
	assert_non_null(got);
	fill(want, len, 3);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
	assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
	p.fd = sv[1];
	start(&p, drain);
	assert_int_equal(io_send_all(sv[0], want, len), 0);
	shutdown(sv[0], SHUT_WR);
	pthread_join(p.thread, NULL);
	assert_int_equal(p.got, len);
	assert_memory_equal(got, want, len);
	close(sv[0]);
	close(sv[1]);

	/* A peer gone is -EPIPE, and SIGPIPE (which would end this test) is
	 * not raised. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	close(sv[1]);
	assert_int_equal(io_send_all(sv[0], "x", 1), -EPIPE);
	close(sv[0]);
	free(want);
	free(got);
}

static void file_positional(void **state)
{
	char want[10100], got[sizeof(want) * 2];
	int fd = temp_file(NULL), fds[2];

	fill(want, sizeof(want), 4);
	assert_int_equal(io_pwrite_all(fd, want + 100, sizeof(want) - 100, 100, 0), 0);
	assert_int_equal(io_pwrite_all(fd, want, 100, 0, RWF_DSYNC), 0);
	assert_int_equal(lseek(fd, 0, SEEK_END), sizeof(want));
	assert_int_equal(io_pread_all(fd, got, sizeof(want), 0), sizeof(want));
	assert_memory_equal(got, want, sizeof(want));
	/* EOF in the middle: what there is; past the end: nothing */
	assert_int_equal(io_pread_all(fd, got, 5000, 6000), sizeof(want) - 6000);
	assert_memory_equal(got, want + 6000, sizeof(want) - 6000);
	assert_int_equal(io_pread_all(fd, got, 5000, 20000), 0);
	/* the positionless ones from the file's position */
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(io_write_all(fd, "abc", 3), 0);
	assert_int_equal(io_read_all(fd, got, sizeof(got)), sizeof(want) - 3);
	assert_memory_equal(got, want + 3, sizeof(want) - 3);

	/* errors: -errno, whatever the flags */
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(io_pread_all(fds[0], got, 1, 0), -ESPIPE);
	assert_int_equal(io_pwrite_all(fds[1], "x", 1, 0, 0), -ESPIPE);
	assert_int_equal(io_pwrite_all(fds[1], "x", 1, 0, RWF_DSYNC), -ESPIPE);
	assert_int_equal(io_write_all(fds[0], "x", 1), -EBADF);
	assert_int_equal(io_read_all(fds[1], got, 1), -EBADF);
	assert_int_equal(io_read_some(fds[1], got, 1), -EBADF);
	assert_int_equal(io_read_all(fds[0], got, (size_t)SSIZE_MAX + 1), -EINVAL);
	close(fds[0]);
	close(fds[1]);
	close(fd);
}

static void direct_alignment(void **state)
{
	char *buf = io_alloc_aligned(IO_DIRECT_MIN + IO_DIRECT_ALIGN);
	int fd = temp_file(NULL), ro;
	char path[64];

	assert_non_null(buf);
	assert_int_equal((uintptr_t)buf % IO_DIRECT_ALIGN, 0);
	assert_true(io_direct_aligned(buf, IO_DIRECT_ALIGN, 0));
	assert_true(io_direct_aligned(buf, 3 * IO_DIRECT_ALIGN, 5 * (uint64_t)IO_DIRECT_ALIGN));
	assert_false(io_direct_aligned(buf + 512, IO_DIRECT_ALIGN, 0));
	assert_false(io_direct_aligned(buf, IO_DIRECT_ALIGN - 1, 0));
	assert_false(io_direct_aligned(buf, IO_DIRECT_ALIGN + 512, 0));
	assert_false(io_direct_aligned(buf, IO_DIRECT_ALIGN, 512));

	/* Which fd a write takes, seen through a "direct" fd that cannot
	 * write: -EBADF is the direct path, 0 the buffered one. */
	memset(buf, 'd', IO_DIRECT_MIN + IO_DIRECT_ALIGN);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ro = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(ro >= 0);
	assert_int_equal(io_pwrite_direct(fd, ro, buf, IO_DIRECT_MIN, 0), -EBADF);
	assert_int_equal(io_pwrite_direct(fd, ro, buf, IO_DIRECT_MIN + IO_DIRECT_ALIGN, IO_DIRECT_ALIGN), -EBADF);
	assert_int_equal(io_pwrite_direct(fd, ro, buf, IO_DIRECT_MIN - IO_DIRECT_ALIGN, 0), 0); /* small */
	assert_int_equal(io_pwrite_direct(fd, ro, buf, IO_DIRECT_MIN + 512, 0), 0);            /* length */
	assert_int_equal(io_pwrite_direct(fd, ro, buf, IO_DIRECT_MIN, 512), 0);                /* offset */
	assert_int_equal(io_pwrite_direct(fd, ro, buf + 512, IO_DIRECT_MIN, 0), 0);            /* buffer */
	assert_int_equal(io_pwrite_direct(fd, -1, buf, IO_DIRECT_MIN, 0), 0);                  /* none */
	close(ro);
	close(fd);
	free(buf);
}

/* A real O_DIRECT write, and a misaligned one beside it that must not take
 * the direct fd. */
static void direct_write(void **state)
{
	const size_t len = IO_DIRECT_MIN;
	char *buf = io_alloc_aligned(2 * len), *got = malloc(2 * len);
	int fd = temp_file(NULL), d = io_reopen_direct(fd), fl;

	assert_non_null(buf);
	assert_non_null(got);
	if (d == -EINVAL) { /* tmpfs, say */
		close(fd);
		free(buf);
		free(got);
		skip();
	}
	assert_true(d >= 0);
	fl = fcntl(d, F_GETFL);
	assert_true(fl & O_DIRECT);
	assert_int_equal(fl & O_ACCMODE, O_WRONLY);
	assert_true(fcntl(d, F_GETFD) & FD_CLOEXEC);

	fill(buf, 2 * len, 5);
	assert_int_equal(io_pwrite_direct(fd, d, buf, len, IO_DIRECT_ALIGN), 0);
	assert_int_equal(io_pwrite_direct(fd, d, buf + len + 1, len - 1, IO_DIRECT_ALIGN + len), 0);
	assert_int_equal(io_pread_all(fd, got, 2 * len, IO_DIRECT_ALIGN), 2 * len - 1);
	assert_memory_equal(got, buf, len);
	assert_memory_equal(got + len, buf + len + 1, len - 1);
	close(d);
	close(fd);
	free(buf);
	free(got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(signals_interrupt),
		cmocka_unit_test(read_short_and_interrupted),
		cmocka_unit_test(read_eof_in_the_middle),
		cmocka_unit_test(write_short_and_interrupted),
		cmocka_unit_test(send_short_and_interrupted),
		cmocka_unit_test(file_positional),
		cmocka_unit_test(direct_alignment),
		cmocka_unit_test(direct_write),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
