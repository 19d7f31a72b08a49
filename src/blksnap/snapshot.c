/* Snapshots (see snapshot.h): a UUID, a set of devices, a difference storage,
 * an event queue; created -> taken -> destroyed.
 *
 * A snapshot is reference counted: the list in struct blksnap holds one, and
 * each diff area holds one, so that images still open over NBD after destroy
 * keep the storage and the queue alive until their last reader goes (their
 * I/O fails with EIO from destroy on). */
#include "blksnap/snapshot.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/lock_order.h"
#include "common/log.h"
#include "core/device.h"
#include "core/registry.h"
#include "core/store_id.h"
#include "blksnap/blksnap.h"
#include "blksnap/cbt_map.h"
#include "blksnap/diff_area.h"
#include "blksnap/diff_storage.h"
#include "blksnap/event_queue.h"
#include "blksnap/image.h"
#include "blksnap/tracker.h"

struct snapshot {
	atomic_int refs;
	uuid_t id;
	struct blksnap *bs;
	struct device **devs;
	size_t n_devs;
	struct diff_area **areas; /* once taken, one per device */
	struct device **images;   /* and its image */
	struct diff_storage *storage;
	uint64_t grow_max; /* a self-growing storage's most bytes; 0 if none */
	struct event_queue events;
	bool taken;
	struct snapshot *next;
};

void blksnap_init(struct blksnap *bs, const struct params *p, struct registry *reg)
{
	bs->params = *p;
	bs->reg = reg;
	pthread_mutex_init(&bs->lock, NULL);
	bs->snapshots = NULL;
	bs->state_dir = NULL;
	atomic_init(&bs->stopping, false);
	bs->storage_veto = NULL;
	bs->veto_opaque = NULL;
}

void blksnap_stopping(struct blksnap *bs)
{
	atomic_store(&bs->stopping, true);
}

static void snapshot_put(void *opaque)
{
	struct snapshot *s = opaque;

	if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	diff_storage_free(s->storage);
	event_queue_destroy(&s->events);
	free(s);
}

static struct snapshot *find_locked(struct blksnap *bs, const uuid_t id)
{
	for (struct snapshot *s = bs->snapshots; s; s = s->next)
		if (uuid_compare(s->id, id) == 0)
			return s;
	return NULL;
}

static struct snapshot *find_by_device_locked(struct blksnap *bs, struct device *dev, size_t *index)
{
	for (struct snapshot *s = bs->snapshots; s; s = s->next)
		for (size_t i = 0; i < s->n_devs; i++)
			if (s->devs[i] == dev) {
				if (index)
					*index = i;
				return s;
			}
	return NULL;
}

static int no_snapshot(const uuid_t id, char *err, size_t errlen)
{
	char u[37];

	uuid_unparse_lower(id, u);
	snprintf(err, errlen, "no snapshot %s", u);
	return -ESRCH;
}

/* The chunk size of DEV, whole. */
static uint64_t chunk_size_of(struct blksnap *bs, struct device *dev)
{
	unsigned shift;
	uint64_t count;

	diff_area_geometry(&bs->params, device_size(dev), device_logical_block_size(dev), &shift, &count);
	return 1ull << shift;
}

/* A self-growing storage that could not hold one chunk of DEV would corrupt
 * its image at the first write: refused before. */
static int check_fits_locked(struct blksnap *bs, struct snapshot *s, struct device *dev, char *err, size_t errlen)
{
	uint64_t chunk = chunk_size_of(bs, dev);

	if (!s->grow_max || chunk <= s->grow_max)
		return 0;
	snprintf(err, errlen, "the storage's limit of %llu bytes cannot hold one %llu-byte chunk of %s",
		 (unsigned long long)s->grow_max, (unsigned long long)chunk, device_name(dev));
	return -EINVAL;
}

/* Add device NAME to S (bs->lock held). */
static int add_locked(struct blksnap *bs, struct snapshot *s, const char *name, char *err, size_t errlen)
{
	struct device *dev, **v;
	int r;

	if (s->taken) {
		snprintf(err, errlen, "the snapshot is already taken");
		return -EALREADY;
	}
	dev = registry_get(bs->reg, name);
	if (!dev) {
		snprintf(err, errlen, "no device '%.255s'", name);
		return -ENODEV;
	}
	if (find_by_device_locked(bs, dev, NULL)) {
		snprintf(err, errlen, "%s is already in a snapshot", name);
		device_put(dev);
		return -EBUSY;
	}
	r = check_fits_locked(bs, s, dev, err, errlen);
	if (r < 0) {
		device_put(dev);
		return r;
	}
	v = realloc(s->devs, (s->n_devs + 1) * sizeof(*v));
	if (!v) {
		device_put(dev);
		return -ENOMEM;
	}
	s->devs = v;
	/* The tracker stays until destroy: detach and device_remove refuse. */
	r = tracker_hold(dev);
	if (r < 0) {
		if (r == -ENOENT)
			snprintf(err, errlen, "no tracker is attached to %s", name);
		else
			snprintf(err, errlen, "no device '%.255s'", name);
		device_put(dev);
		return r;
	}
	v[s->n_devs++] = dev;
	return 0;
}

static void free_unlinked(struct snapshot *s)
{
	for (size_t i = 0; i < s->n_devs; i++) {
		tracker_release(s->devs[i]);
		device_put(s->devs[i]);
	}
	free(s->devs);
	event_queue_close(&s->events);
	snapshot_put(s);
}

/* The stores a difference storage may not use: another's bytes. A device's
 * store (copy-before-write would write into what it copies from), another
 * range of any snapshot's storage (chunks would overwrite each other), or
 * what the daemon says is its own (bs->storage_veto: the FUSE files, the
 * state directory). The ranges R of F are claimed in the registry for S,
 * which also keeps devices off them from now on. */
static int claim_storage_locked(struct blksnap *bs, struct snapshot *s, struct ds_file *f, const char *path,
				const struct byte_range *r, size_t n, struct store_claim **claim, char *err,
				size_t errlen)
{
	const struct store_id *ids;
	size_t n_ids = ds_file_ids(f, &ids);
	struct device *dev;
	int ret;

	if (n_ids == 0)
		return registry_claim(bs->reg, NULL, 0, NULL, 0, s, claim, NULL); /* a test's custom store */
	if (bs->storage_veto) {
		ret = bs->storage_veto(bs->veto_opaque, ids, n_ids, path, err, errlen);
		if (ret < 0)
			return ret;
	}
	ret = registry_claim(bs->reg, ids, n_ids, r, n, s, claim, &dev);
	if (ret == -EBUSY) {
		snprintf(err, errlen, "%.255s: the store of device %s: a snapshot cannot keep its copies there", path,
			 dev ? device_name(dev) : "?");
		device_put(dev);
		return -EINVAL;
	}
	if (ret == -EEXIST)
		snprintf(err, errlen, "%.255s: some of these sectors are difference storage already; to grow a "
			 "file, append only its new part (-r OFFSET:COUNT)", path);
	return ret;
}

int snapshot_create(struct blksnap *bs, const char *const *devs, size_t n, const char *grow_path,
		    uint64_t grow_limit, uuid_t id, char *err, size_t errlen)
{
	struct snapshot *s = calloc(1, sizeof(*s));
	struct store_claim *claim;
	struct ds_file *f = NULL;
	struct byte_range all;
	int r = 0;

	if (!s)
		return -ENOMEM;
	atomic_init(&s->refs, 1);
	uuid_generate_random(s->id);
	s->bs = bs;
	event_queue_init(&s->events);
	r = diff_storage_new(&bs->params, &s->events, &s->storage);
	if (r == 0 && grow_path)
		r = ds_file_create(grow_path, &f, err, errlen);
	if (f) {
		/* What the file holds is storage from its first byte, and it
		 * grows up to the limit: both are claimed. */
		s->grow_max = ds_file_size(f) > grow_limit ? ds_file_size(f) : grow_limit;
		if (s->grow_max < (1ull << bs->params.chunk_minimum_shift)) {
			snprintf(err, errlen, "the storage's limit of %llu bytes cannot hold one chunk (%llu bytes)",
				 (unsigned long long)s->grow_max, 1ull << bs->params.chunk_minimum_shift);
			r = -EINVAL;
		}
	}
	lock_mutex(&bs->lock, LOCK_BLKSNAP);
	if (r == 0 && f) {
		all = (struct byte_range){ 0, s->grow_max };
		r = claim_storage_locked(bs, s, f, grow_path, &all, 1, &claim, err, errlen);
		if (r == 0) {
			r = diff_storage_set_growing(s->storage, f, grow_limit);
			f = NULL;
		}
	}
	for (size_t i = 0; i < n && r == 0; i++)
		r = add_locked(bs, s, devs[i], err, errlen);
	if (r < 0) {
		registry_unclaim_owner(bs->reg, s);
		unlock_mutex(&bs->lock, LOCK_BLKSNAP);
		ds_file_free(f);
		free_unlinked(s);
		return r;
	}
	s->next = bs->snapshots;
	bs->snapshots = s;
	uuid_copy(id, s->id);
	/* blksnap asks for storage as soon as the snapshot exists. */
	diff_storage_start(s->storage);
	unlock_mutex(&bs->lock, LOCK_BLKSNAP);
	return 0;
}

int snapshot_add(struct blksnap *bs, const uuid_t id, const char *dev, char *err, size_t errlen)
{
	struct snapshot *s;
	int r;

	lock_mutex(&bs->lock, LOCK_BLKSNAP);
	s = find_locked(bs, id);
	r = s ? add_locked(bs, s, dev, err, errlen) : no_snapshot(id, err, errlen);
	unlock_mutex(&bs->lock, LOCK_BLKSNAP);
	return r;
}

int snapshot_append_storage(struct blksnap *bs, const uuid_t id, const char *path,
			    const struct sector_range *r, size_t n, char *err, size_t errlen)
{
	struct byte_range *br;
	struct store_claim *claim;
	struct ds_file *f;
	struct snapshot *s;
	int ret;

	ret = ds_file_open(path, &f, err, errlen);
	if (ret < 0)
		return ret;
	br = calloc(n ? n : 1, sizeof(*br));
	if (!br) {
		ds_file_free(f);
		return -ENOMEM;
	}
	ret = ds_file_ranges(f, r, n, br, err, errlen);
	lock_mutex(&bs->lock, LOCK_BLKSNAP);
	s = find_locked(bs, id);
	if (ret == 0 && !s)
		ret = no_snapshot(id, err, errlen);
	if (ret == 0)
		ret = claim_storage_locked(bs, s, f, path, br, n ? n : 1, &claim, err, errlen);
	if (ret == 0) {
		ret = diff_storage_append(s->storage, f, br, n ? n : 1);
		f = NULL;
		if (ret < 0)
			registry_unclaim(bs->reg, claim);
	}
	unlock_mutex(&bs->lock, LOCK_BLKSNAP);
	ds_file_free(f);
	free(br);
	return ret;
}

static int compare_devices(const void *a, const void *b)
{
	return strcmp(device_name(*(struct device *const *)a), device_name(*(struct device *const *)b));
}

/* The images, before the instant: a device named "<origin>-image" for each
 * (a name no device can have: image_name_reserved), in the registry and so
 * in every export. Until the take arms its diff area, an image's I/O fails,
 * so nobody can read one early. Everything that can fail in a take fails
 * here, before the instant, so that a take happens whole or not at all. */
static int add_images_locked(struct blksnap *bs, struct snapshot *s, char *err, size_t errlen)
{
	s->images = calloc(s->n_devs, sizeof(*s->images));
	if (!s->images)
		return -ENOMEM;
	for (size_t i = 0; i < s->n_devs; i++) {
		struct device *img;
		char name[300];
		int r;

		snprintf(name, sizeof(name), "%s" IMAGE_SUFFIX, device_name(s->devs[i]));
		r = image_device_new(name, s->areas[i], &img);
		if (r == 0) {
			r = registry_add(bs->reg, img);
			if (r == 0)
				s->images[i] = img;
			else
				device_put(img);
		}
		if (r < 0) {
			snprintf(err, errlen, "cannot add the image %s: %s", name, strerror(-r));
			return r;
		}
	}
	return 0;
}

/* A take that failed before its instant: its images and areas go, and a
 * later take starts over. */
static void undo_take(struct blksnap *bs, struct snapshot *s)
{
	for (size_t i = 0; s->images && i < s->n_devs; i++) {
		if (!s->images[i])
			continue;
		registry_remove_device(bs->reg, s->images[i]);
		device_put(s->images[i]);
	}
	free(s->images);
	s->images = NULL;
	for (size_t i = 0; s->areas && i < s->n_devs; i++)
		diff_area_put(s->areas[i]); /* each drops its reference on S */
	free(s->areas);
	s->areas = NULL;
}

/* Each area was made for its device's size before the drain. A snapshot
 * holds its devices' trackers, which makes resize refuse; this is the check
 * that a refusal could not be missed. */
static bool sizes_unchanged(struct snapshot *s)
{
	for (size_t i = 0; i < s->n_devs; i++)
		if (diff_area_capacity(s->areas[i]) != device_size(s->devs[i]))
			return false;
	return true;
}

int snapshot_take(struct blksnap *bs, const uuid_t id, char *err, size_t errlen)
{
	struct device **order = NULL;
	struct snapshot *s;
	int r = 0;

	lock_mutex(&bs->lock, LOCK_BLKSNAP);
	s = find_locked(bs, id);
	if (!s) {
		r = no_snapshot(id, err, errlen);
		goto out;
	}
	if (s->taken) {
		snprintf(err, errlen, "the snapshot is already taken");
		r = -EALREADY;
		goto out;
	}
	if (s->n_devs == 0) {
		snprintf(err, errlen, "the snapshot has no device");
		r = -ENODEV;
		goto out;
	}
	s->areas = calloc(s->n_devs, sizeof(*s->areas));
	order = malloc(s->n_devs * sizeof(*order));
	if (!s->areas || !order) {
		r = -ENOMEM;
		goto undo;
	}
	for (size_t i = 0; i < s->n_devs && r == 0; i++) {
		r = diff_area_new(s->devs[i], &bs->params, s->storage, &s->events, snapshot_put, s, &s->areas[i]);
		if (r == 0)
			atomic_fetch_add(&s->refs, 1); /* the area's reference */
	}
	if (r == 0)
		r = add_images_locked(bs, s, err, errlen);
	if (r < 0)
		goto undo;

	/* The instant: drain every device (in name order, so that two takes
	 * never wait on each other), switch, resume. Nothing here can fail but
	 * the CBT's reset, which leaves the map corrupted (its images then
	 * publish no changes) and the snapshot whole. */
	memcpy(order, s->devs, s->n_devs * sizeof(*order));
	qsort(order, s->n_devs, sizeof(*order), compare_devices);
	for (size_t i = 0; i < s->n_devs; i++)
		device_quiesce(order[i]);
	if (!sizes_unchanged(s)) {
		for (size_t i = s->n_devs; i-- > 0;)
			device_resume(order[i]);
		snprintf(err, errlen, "a device was resized during the take; take again");
		r = -EBUSY;
		goto undo;
	}
	for (size_t i = 0; i < s->n_devs; i++) {
		struct filter *f = tracker_of_quiesced(s->devs[i]);

		/* held since add_locked: it is there */
		if (cbt_map_switch(tracker_cbt(f), device_size(s->devs[i]), &bs->params) < 0)
			log_error("%s: the CBT could not be reset at the take (out of memory): it is "
				  "corrupted, and the next take tries again", device_name(s->devs[i]));
		/* With --state-dir: the new numbers reach the disk before any
		 * write after the instant can (a failure is logged, and gives
		 * up the write-intent log: a crash then issues a new
		 * generation; the take itself stands). */
		tracker_checkpoint(f);
		tracker_set_diff_area(f, s->areas[i]);
	}
	for (size_t i = s->n_devs; i-- > 0;)
		device_resume(order[i]);
	s->taken = true;
	for (size_t i = 0; i < s->n_devs; i++)
		image_publish(s->images[i], s->areas[i]);
	goto out;
undo:
	undo_take(bs, s);
out:
	free(order);
	unlock_mutex(&bs->lock, LOCK_BLKSNAP);
	return r;
}

int snapshot_devices(struct blksnap *bs, const uuid_t id, struct device ***devs, size_t *n)
{
	struct snapshot *s;
	int r = 0;

	lock_mutex(&bs->lock, LOCK_BLKSNAP);
	s = find_locked(bs, id);
	if (!s) {
		r = -ESRCH;
	} else if (!(*devs = malloc((s->n_devs ? s->n_devs : 1) * sizeof(**devs)))) {
		r = -ENOMEM;
	} else {
		for (size_t i = 0; i < s->n_devs; i++)
			(*devs)[i] = device_get(s->devs[i]);
		*n = s->n_devs;
	}
	unlock_mutex(&bs->lock, LOCK_BLKSNAP);
	return r;
}

static void destroy_locked(struct blksnap *bs, struct snapshot *s)
{
	for (struct snapshot **pp = &bs->snapshots; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	/* Images first: no new NBD clients; open ones now get errors. */
	for (size_t i = 0; s->images && i < s->n_devs; i++) {
		if (!s->images[i])
			continue;
		registry_remove_device(bs->reg, s->images[i]);
		device_put(s->images[i]);
	}
	free(s->images);
	for (size_t i = 0; s->areas && i < s->n_devs; i++) {
		struct filter *f;

		if (!s->areas[i])
			continue;
		diff_area_detach(s->areas[i]);
		device_quiesce(s->devs[i]);
		f = tracker_of_quiesced(s->devs[i]);
		if (f)
			tracker_set_diff_area(f, NULL);
		device_resume(s->devs[i]);
		diff_area_put(s->areas[i]);
	}
	free(s->areas);
	registry_unclaim_owner(bs->reg, s);
	free_unlinked(s);
}

int snapshot_destroy(struct blksnap *bs, const uuid_t id, char *err, size_t errlen)
{
	struct snapshot *s;

	lock_mutex(&bs->lock, LOCK_BLKSNAP);
	s = find_locked(bs, id);
	if (!s) {
		unlock_mutex(&bs->lock, LOCK_BLKSNAP);
		return no_snapshot(id, err, errlen);
	}
	destroy_locked(bs, s);
	unlock_mutex(&bs->lock, LOCK_BLKSNAP);
	return 0;
}

void blksnap_fini(struct blksnap *bs)
{
	lock_mutex(&bs->lock, LOCK_BLKSNAP);
	while (bs->snapshots)
		destroy_locked(bs, bs->snapshots);
	unlock_mutex(&bs->lock, LOCK_BLKSNAP);
	pthread_mutex_destroy(&bs->lock);
}

int snapshot_collect(struct blksnap *bs, uuid_t **ids, size_t *n)
{
	size_t count = 0, i = 0;

	lock_mutex(&bs->lock, LOCK_BLKSNAP);
	for (struct snapshot *s = bs->snapshots; s; s = s->next)
		count++;
	*ids = malloc((count ? count : 1) * sizeof(**ids));
	if (!*ids) {
		unlock_mutex(&bs->lock, LOCK_BLKSNAP);
		return -ENOMEM;
	}
	for (struct snapshot *s = bs->snapshots; s; s = s->next)
		uuid_copy((*ids)[i++], s->id);
	unlock_mutex(&bs->lock, LOCK_BLKSNAP);
	*n = count;
	return 0;
}

int snapshot_wait_event(struct blksnap *bs, const uuid_t id, uint32_t timeout_ms, struct event *ev)
{
	struct snapshot *s;

	lock_mutex(&bs->lock, LOCK_BLKSNAP);
	s = find_locked(bs, id);
	if (s)
		atomic_fetch_add(&s->refs, 1);
	unlock_mutex(&bs->lock, LOCK_BLKSNAP);
	if (!s)
		return -ESRCH;
	/* Without the lock: destroy closes the queue, which wakes us. */
	int r = event_queue_wait(&s->events, timeout_ms, ev);

	snapshot_put(s);
	return r;
}

int snapshot_device_info(struct blksnap *bs, const char *name, struct snapshot_info *info, char *err,
			 size_t errlen)
{
	struct device *dev = registry_get(bs->reg, name);
	struct snapshot *s;
	size_t i;

	memset(info, 0, sizeof(*info));
	if (!dev) {
		snprintf(err, errlen, "no device '%.255s'", name);
		return -ENODEV;
	}
	if (!device_has_filter(dev, &tracker_filter_ops)) {
		snprintf(err, errlen, "no tracker is attached to %s", name);
		device_put(dev);
		return -ENOENT;
	}
	lock_mutex(&bs->lock, LOCK_BLKSNAP);
	s = find_by_device_locked(bs, dev, &i);
	if (s) {
		struct diff_storage_stats st;

		info->in_snapshot = true;
		uuid_copy(info->id, s->id);
		if (s->taken) {
			info->error_code = diff_area_error(s->areas[i]);
			info->chunks_copied = diff_area_copied(s->areas[i]);
			snprintf(info->image, sizeof(info->image), "%s",
				 s->images && s->images[i] ? device_name(s->images[i]) : "");
		}
		diff_storage_stats(s->storage, &st);
		info->storage_capacity = st.capacity;
		info->storage_used = st.used;
	}
	unlock_mutex(&bs->lock, LOCK_BLKSNAP);
	device_put(dev);
	return 0;
}
