/* The restore point as a disk image (image.h): the dispatcher. It finds the
 * repository's format version, opens the restore point with that version's
 * reader (image_internal.h), and checks every range before the reader sees
 * it. What a version stores and how it is read is its reader's alone. */
#include <errno.h>
#include <stddef.h>

#include "backup/image_internal.h"
#include "backup/repo2.h"
#include "backup/util.h"

/* The readers, by the version repo.json declares (repo_version). */
static const struct {
	int version;
	int (*open)(const struct image_open_opts *o, struct image **out);
} readers[] = {
	{ 1, image_v1_open },
	{ 2, image_v2_open },
};

static int open_version(int version, const struct image_open_opts *o, struct image **out)
{
	for (size_t i = 0; i < sizeof(readers) / sizeof(readers[0]); i++)
		if (readers[i].version == version)
			return readers[i].open(o, out);
	bk_error("%s: a version %d repository: serve and mount read versions 1 and 2", o->repo, version);
	return -EOPNOTSUPP;
}

int image_open(const struct image_open_opts *o, struct image **out)
{
	int version;

	*out = NULL;
	version = repo_version(o->repo);
	if (version < 0)
		return version;
	if (version == 0) {
		bk_error("%s: not a bdfilter-backup repository", o->repo);
		return -ENOENT;
	}
	if (version == 1 && o->device) {
		bk_error("%s: a version 1 repository holds one device: no --device", o->repo);
		return -EINVAL;
	}
	return open_version(version, o, out);
}

void image_close(struct image *im)
{
	if (im)
		im->ops->close(im);
}

uint64_t image_size(const struct image *im)
{
	return im->size;
}

unsigned image_backup(const struct image *im)
{
	return im->backup;
}

uint32_t image_block_size(const struct image *im)
{
	return im->block_size;
}

int image_read(struct image *im, void *buf, size_t len, uint64_t offset)
{
	if (offset > im->size || len > im->size - offset)
		return -EINVAL;
	if (len == 0)
		return 0;
	return im->ops->read(im, buf, len, offset);
}

int image_extents(struct image *im, uint64_t offset, uint64_t len, image_extent_fn fn, void *opaque)
{
	if (offset >= im->size || len == 0)
		return 0;
	if (len > im->size - offset)
		len = im->size - offset;
	return im->ops->extents(im, offset, len, fn, opaque);
}
