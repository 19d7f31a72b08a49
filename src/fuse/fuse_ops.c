/* The FUSE export's file operations: lookup, attributes and the directory
 * from the table of files, and read, write, flush, fsync and fallocate mapped
 * onto the device calls.
 *
 * Every file is opened with direct_io: the kernel keeps no page cache for it,
 * so what a loop device writes reaches the device before the write completes,
 * and a flush or fsync on the file is a device flush. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "common/lock_order.h"
#include "core/device.h"
#include "core/io.h"
#include "fuse/fuse_internal.h"

/* A readdir handle: the listing as it was at opendir, so that entries coming
 * and going between two readdir calls cannot make the kernel skip one. */
struct fx_dir {
	char *buf;
	size_t len;
};

/* A device can be resized while its file is open (device_resize): the size
 * is the device's now, so getattr shows it (loop's LOOP_SET_CAPACITY reads it)
 * and I/O is bounded by it. A removed file keeps the last size it had. */
static uint64_t fx_file_size(const struct fx_file *f)
{
	return f->dev ? device_size(f->dev) : f->size;
}

static void fill_attr(const struct fuse_export *fx, const struct fx_file *f, struct stat *st)
{
	uint64_t size;

	memset(st, 0, sizeof(*st));
	if (!f) {
		st->st_ino = ROOT_INO;
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		st->st_atime = st->st_mtime = st->st_ctime = fx->mounted_at;
		return;
	}
	st->st_ino = f->ino;
	st->st_mode = S_IFREG | (f->readonly ? 0444 : 0644);
	st->st_nlink = atomic_load(&f->removed) ? 0 : 1;
	size = fx_file_size(f);
	st->st_size = (off_t)size;
	st->st_blksize = FX_BLOCK;
	st->st_blocks = (blkcnt_t)((size + 511) / 512);
	st->st_atime = st->st_mtime = st->st_ctime = f->added;
}

static void fx_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Async direct I/O lets the kernel keep several of a loop device's
	 * requests in flight on one file. */
	if (conn->capable & FUSE_CAP_ASYNC_DIO)
		conn->want |= FUSE_CAP_ASYNC_DIO;
	/* O_TRUNC must reach setattr (and be refused), not be swallowed by open. */
	conn->want &= ~(unsigned)FUSE_CAP_ATOMIC_O_TRUNC;
	conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
	conn->max_background = 128;
	conn->congestion_threshold = 96;
}

static void forget_one(struct fuse_export *fx, fuse_ino_t ino, uint64_t nlookup)
{
	struct fx_file *f, *gone = NULL;
	struct device *dev = NULL;

	lock_mutex(&fx->lock, LOCK_EXPORTS);
	f = fx_find_ino_locked(fx, ino);
	if (f) {
		f->nlookup = nlookup > f->nlookup ? 0 : f->nlookup - nlookup;
		dev = fx_settle_locked(fx, f, &gone);
	}
	unlock_mutex(&fx->lock, LOCK_EXPORTS);
	device_put(dev);
	fx_file_free(gone);
}

/* One open handle of F is gone. The last reference to a removed device
 * flushes and closes it here, outside the lock. */
static void fx_file_close(struct fuse_export *fx, struct fx_file *f)
{
	struct fx_file *gone = NULL;
	struct device *dev;

	lock_mutex(&fx->lock, LOCK_EXPORTS);
	f->nopen--;
	dev = fx_settle_locked(fx, f, &gone);
	unlock_mutex(&fx->lock, LOCK_EXPORTS);
	device_put(dev);
	fx_file_free(gone);
}

static void fx_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_export *fx = fuse_req_userdata(req);
	struct fuse_entry_param e;
	struct fx_file *f;

	if (parent != ROOT_INO) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	memset(&e, 0, sizeof(e));
	lock_mutex(&fx->lock, LOCK_EXPORTS);
	f = fx_find_name_locked(fx, name);
	if (f) {
		f->nlookup++;
		e.ino = f->ino;
		fill_attr(fx, f, &e.attr);
	}
	unlock_mutex(&fx->lock, LOCK_EXPORTS);
	if (!f) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	/* entry_timeout and attr_timeout 0: devices come and go at run time. */
	/* The kernel did not get the entry, so it will not forget it. */
	if (fuse_reply_entry(req, &e) != 0)
		forget_one(fx, e.ino, 1);
}

static void fx_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	forget_one(fuse_req_userdata(req), ino, nlookup);
	fuse_reply_none(req);
}

static void fx_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		forget_one(fuse_req_userdata(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void fx_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fuse_export *fx = fuse_req_userdata(req);
	struct fx_file *f = NULL;
	struct stat st;

	lock_mutex(&fx->lock, LOCK_EXPORTS);
	if (ino != ROOT_INO)
		f = fx_find_ino_locked(fx, ino);
	if (ino == ROOT_INO || f)
		fill_attr(fx, f, &st);
	unlock_mutex(&fx->lock, LOCK_EXPORTS);
	if (ino != ROOT_INO && !f)
		fuse_reply_err(req, ENOENT);
	else
		fuse_reply_attr(req, &st, 0);
}

/* Like a block device, a file has its device's size for good: truncation is
 * refused. Times are accepted and ignored (touch works). */
static void fx_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	struct fuse_export *fx = fuse_req_userdata(req);
	struct fx_file *f = NULL;
	struct stat st;
	int err = 0;

	lock_mutex(&fx->lock, LOCK_EXPORTS);
	if (ino != ROOT_INO)
		f = fx_find_ino_locked(fx, ino);
	if (ino != ROOT_INO && !f)
		err = ENOENT;
	else if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
		err = EPERM;
	else if ((to_set & FUSE_SET_ATTR_SIZE) && (!f || (uint64_t)attr->st_size != fx_file_size(f)))
		err = f && f->readonly ? EROFS : EPERM;
	else
		fill_attr(fx, f, &st);
	unlock_mutex(&fx->lock, LOCK_EXPORTS);
	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_attr(req, &st, 0);
}

static void fx_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fuse_export *fx = fuse_req_userdata(req);
	struct fx_file *f;
	int err = 0;

	lock_mutex(&fx->lock, LOCK_EXPORTS);
	f = fx_find_ino_locked(fx, ino);
	if (ino == ROOT_INO)
		err = EISDIR;
	else if (!f || atomic_load(&f->removed))
		err = ENOENT;
	else if (f->readonly && (fi->flags & O_ACCMODE) != O_RDONLY)
		err = EROFS; /* losetup falls back to a read-only loop device on EROFS */
	else
		f->nopen++;
	unlock_mutex(&fx->lock, LOCK_EXPORTS);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	fi->fh = (uintptr_t)f;
	fi->direct_io = 1;
	fi->keep_cache = 0;
	/* The kernel will not release a handle it never got. */
	if (fuse_reply_open(req, fi) != 0)
		fx_file_close(fx, f);
}

static void fx_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fuse_export *fx = fuse_req_userdata(req);

	fx_file_close(fx, (struct fx_file *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* The file behind a data request, or NULL after replying EIO: a file removed
 * while open (device_remove, snapshot_destroy) fails its I/O. */
static struct fx_file *io_file(fuse_req_t req, struct fuse_file_info *fi)
{
	struct fx_file *f = (struct fx_file *)(uintptr_t)fi->fh;

	if (atomic_load(&f->removed)) {
		fuse_reply_err(req, EIO);
		return NULL;
	}
	return f;
}

static void fx_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fx_file *f = io_file(req, fi);
	uint64_t end;
	void *buf;
	int r;

	if (!f)
		return;
	end = device_size(f->dev);
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* A read at or past the end is short, as on any file. */
	if ((uint64_t)off >= end) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > end - (uint64_t)off)
		size = (size_t)(end - (uint64_t)off);
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = device_pread(f->dev, buf, size, (uint64_t)off, 0);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, buf, size);
	free(buf);
}

static void fx_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct fx_file *f = io_file(req, fi);
	uint32_t flags = 0;
	uint64_t end;
	int r;

	if (!f)
		return;
	end = device_size(f->dev);
	if (f->readonly) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* The file cannot grow: a write past the end writes what fits. */
	if (size > 0 && (uint64_t)off >= end) {
		fuse_reply_err(req, ENOSPC);
		return;
	}
	if (size > end - (uint64_t)off)
		size = (size_t)(end - (uint64_t)off);
	/* The kernel passes O_DSYNC for an O_DSYNC/O_SYNC file and for RWF_DSYNC. */
	if (fi->flags & O_DSYNC)
		flags |= BDF_FUA;
	r = device_pwrite(f->dev, buf, size, (uint64_t)off, flags);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_write(req, size);
}

static void reply_flush(fuse_req_t req, struct fuse_file_info *fi)
{
	struct fx_file *f = io_file(req, fi);
	int r;

	if (!f)
		return;
	r = device_flush(f->dev, 0);
	fuse_reply_err(req, -r);
}

/* flush comes with every close(): a close makes what was written durable. */
static void fx_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	reply_flush(req, fi);
}

static void fx_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	reply_flush(req, fi);
}

/* What a loop device sends: REQ_OP_DISCARD and REQ_OP_WRITE_ZEROES become
 * PUNCH_HOLE or ZERO_RANGE (always with KEEP_SIZE). A punched hole reads back
 * as zeroes on a file, so PUNCH_HOLE is a write of zeroes that may deallocate
 * (a plain trim would leave the contents undefined). */
static void fx_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	struct fx_file *f = io_file(req, fi);
	const int known = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;
	uint64_t end, size;
	int r;

	if (!f)
		return;
	if (mode & ~known) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (off < 0 || len <= 0 || (uint64_t)off > UINT64_MAX - (uint64_t)len ||
	    ((mode & FALLOC_FL_PUNCH_HOLE) && (mode & FALLOC_FL_ZERO_RANGE)) ||
	    ((mode & FALLOC_FL_PUNCH_HOLE) && !(mode & FALLOC_FL_KEEP_SIZE))) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (f->readonly) {
		fuse_reply_err(req, EPERM);
		return;
	}
	end = (uint64_t)off + (uint64_t)len;
	size = device_size(f->dev);
	if (end > size && !(mode & FALLOC_FL_KEEP_SIZE)) {
		fuse_reply_err(req, EFBIG); /* the file cannot grow */
		return;
	}
	if (end > size)
		end = size;
	if ((uint64_t)off >= end || !(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))) {
		/* Nothing to do: a device's blocks are all there already. */
		fuse_reply_err(req, 0);
		return;
	}
	r = device_zero(f->dev, end - (uint64_t)off, (uint64_t)off,
			(mode & FALLOC_FL_PUNCH_HOLE) ? BDF_MAY_TRIM : 0);
	fuse_reply_err(req, r == -ENOTSUP ? EOPNOTSUPP : -r);
}

/* One dirent at D->len; its offset is where the next one starts. */
static void dir_add(fuse_req_t req, struct fx_dir *d, const char *name, fuse_ino_t ino, mode_t type)
{
	size_t sz = fuse_add_direntry(req, NULL, 0, name, NULL, 0);
	struct stat st = { .st_ino = ino, .st_mode = type };

	fuse_add_direntry(req, d->buf + d->len, sz, name, &st, (off_t)(d->len + sz));
	d->len += sz;
}

static void fx_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fuse_export *fx = fuse_req_userdata(req);
	struct fx_dir *d;
	size_t need;

	if (ino != ROOT_INO) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	lock_mutex(&fx->lock, LOCK_EXPORTS);
	need = fuse_add_direntry(req, NULL, 0, ".", NULL, 0) + fuse_add_direntry(req, NULL, 0, "..", NULL, 0);
	for (size_t i = 0; i < fx->n_files; i++)
		if (!atomic_load(&fx->files[i]->removed))
			need += fuse_add_direntry(req, NULL, 0, fx->files[i]->name, NULL, 0);
	d->buf = malloc(need);
	if (d->buf) {
		dir_add(req, d, ".", ROOT_INO, S_IFDIR);
		dir_add(req, d, "..", ROOT_INO, S_IFDIR);
		for (size_t i = 0; i < fx->n_files; i++)
			if (!atomic_load(&fx->files[i]->removed))
				dir_add(req, d, fx->files[i]->name, fx->files[i]->ino, S_IFREG);
	}
	unlock_mutex(&fx->lock, LOCK_EXPORTS);
	if (!d->buf) {
		free(d);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fi->fh = (uintptr_t)d;
	if (fuse_reply_open(req, fi) != 0) {
		free(d->buf);
		free(d);
	}
}

static void fx_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fx_dir *d = (struct fx_dir *)(uintptr_t)fi->fh;
	size_t n;
	char *copy;

	if (off < 0 || (size_t)off >= d->len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	/* Replied from a copy: once the kernel has the reply, the directory
	 * may be closed and D freed by another thread while this one is still
	 * in the reply's writev (AddressSanitizer checks the buffer after the
	 * call returns, and saw it freed). */
	n = size < d->len - (size_t)off ? size : d->len - (size_t)off;
	copy = malloc(n);
	if (!copy) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	memcpy(copy, d->buf + off, n);
	fuse_reply_buf(req, copy, n);
	free(copy);
}

static void fx_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fx_dir *d = (struct fx_dir *)(uintptr_t)fi->fh;

	free(d->buf);
	free(d);
	fuse_reply_err(req, 0);
}

static void fx_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fuse_export *fx = fuse_req_userdata(req);
	struct statvfs sv;
	uint64_t bytes = 0, files = 0;

	lock_mutex(&fx->lock, LOCK_EXPORTS);
	for (size_t i = 0; i < fx->n_files; i++)
		if (!atomic_load(&fx->files[i]->removed)) {
			bytes += fx->files[i]->size;
			files++;
		}
	unlock_mutex(&fx->lock, LOCK_EXPORTS);
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = sv.f_frsize = FX_BLOCK;
	sv.f_blocks = (bytes + FX_BLOCK - 1) / FX_BLOCK;
	sv.f_files = files;
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

const struct fuse_lowlevel_ops fx_ops = {
	.init = fx_init,
	.lookup = fx_lookup,
	.forget = fx_forget,
	.forget_multi = fx_forget_multi,
	.getattr = fx_getattr,
	.setattr = fx_setattr,
	.open = fx_open,
	.release = fx_release,
	.read = fx_read,
	.write = fx_write,
	.flush = fx_flush,
	.fsync = fx_fsync,
	.fallocate = fx_fallocate,
	.opendir = fx_opendir,
	.readdir = fx_readdir,
	.releasedir = fx_releasedir,
	.statfs = fx_statfs,
};

