/* Fault rules and the fault points (see fault.h). */
#include "common/fault.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"

static const struct {
	const char *name;
	unsigned ops;
} op_names[] = {
	{ "read", FAULT_OP_READ }, { "write", FAULT_OP_WRITE }, { "flush", FAULT_OP_FLUSH },
	{ "trim", FAULT_OP_TRIM }, { "zero", FAULT_OP_ZERO }, { "any", FAULT_OP_ANY },
};

int fault_op_parse(const char *s, unsigned *ops)
{
	for (size_t i = 0; i < sizeof(op_names) / sizeof(op_names[0]); i++)
		if (strcmp(s, op_names[i].name) == 0) {
			*ops = op_names[i].ops;
			return 0;
		}
	return -EINVAL;
}

const char *fault_op_name(unsigned ops)
{
	for (size_t i = 0; i < sizeof(op_names) / sizeof(op_names[0]); i++)
		if (ops == op_names[i].ops)
			return op_names[i].name;
	return "?";
}

int fault_error_parse(const char *s, int *error)
{
	if (strcmp(s, "EIO") == 0)
		*error = EIO;
	else if (strcmp(s, "ENOSPC") == 0)
		*error = ENOSPC;
	else if (strcmp(s, "none") == 0)
		*error = 0;
	else
		return -EINVAL;
	return 0;
}

const char *fault_error_name(int error)
{
	return error == EIO ? "EIO" : error == ENOSPC ? "ENOSPC" : error == 0 ? "none" : "?";
}

static int parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "KMG";
	const char *u;
	char *end;

	errno = 0;
	if (*s < '0' || *s > '9')
		return -EINVAL;
	*out = strtoull(s, &end, 0);
	if (errno)
		return -EINVAL;
	if (!*end)
		return 0;
	u = strchr(units, *end & ~0x20);
	if (!u || end[1] || *out > UINT64_MAX >> (10 * (u - units + 1)))
		return -EINVAL;
	*out <<= 10 * (u - units + 1);
	return 0;
}

int fault_range_parse(const char *s, uint64_t *offset, uint64_t *length)
{
	const char *colon = strchr(s, ':');
	char ofs[32];

	if (!colon || (size_t)(colon - s) >= sizeof(ofs))
		return -EINVAL;
	memcpy(ofs, s, (size_t)(colon - s));
	ofs[colon - s] = '\0';
	if (parse_size(ofs, offset) < 0 || parse_size(colon + 1, length) < 0 || *length == 0 ||
	    *length > UINT64_MAX - *offset)
		return -EINVAL;
	return 0;
}

int fault_rate_parse(const char *s, double *rate)
{
	char *end;

	errno = 0;
	if ((*s < '0' || *s > '9') && *s != '.')
		return -EINVAL;
	*rate = strtod(s, &end);
	if (errno || *end || !(*rate >= 0.0 && *rate <= 1.0))
		return -EINVAL;
	return 0;
}

int fault_spec_check(const struct fault_spec *spec, char *err, size_t errlen)
{
	if (!spec->ops || (spec->ops & ~FAULT_OP_ANY)) {
		snprintf(err, errlen, "no request kind to match");
		return -EINVAL;
	}
	if (!(spec->rate >= 0.0 && spec->rate <= 1.0)) {
		snprintf(err, errlen, "a rate is a chance, from 0 to 1");
		return -EINVAL;
	}
	if (spec->length && spec->length > UINT64_MAX - spec->offset) {
		snprintf(err, errlen, "the range runs past the largest offset");
		return -EINVAL;
	}
	if (spec->error < 0) {
		snprintf(err, errlen, "an errno is positive");
		return -EINVAL;
	}
	if (!spec->error && !spec->delay_ms) {
		snprintf(err, errlen, "a rule with no error and no delay does nothing");
		return -EINVAL;
	}
	if (spec->short_write && !spec->error) {
		snprintf(err, errlen, "a short write is one that fails: give it an error");
		return -EINVAL;
	}
	if (spec->short_write && !(spec->ops & FAULT_OP_WRITE)) {
		snprintf(err, errlen, "only a write can be short");
		return -EINVAL;
	}
	return 0;
}

/* splitmix64: small, and the same sequence for a seed everywhere. */
static uint64_t prng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void fault_rules_init(struct fault_rules *fr)
{
	memset(fr, 0, sizeof(*fr));
	atomic_init(&fr->live, 0);
	pthread_mutex_init(&fr->lock, NULL);
}

void fault_rules_destroy(struct fault_rules *fr)
{
	fault_rules_clear(fr);
	pthread_mutex_destroy(&fr->lock);
}

/* One rule fewer not spent (lock held). */
static void live_sub(struct fault_rules *fr, unsigned n)
{
	atomic_fetch_sub(&fr->live, n);
	if (fr->also)
		atomic_fetch_sub(fr->also, n);
}

int fault_rules_add(struct fault_rules *fr, const struct fault_spec *spec)
{
	char why[128];
	int r = fault_spec_check(spec, why, sizeof(why));

	if (r < 0)
		return r;
	pthread_mutex_lock(&fr->lock);
	if (fr->n == FAULT_MAX_RULES) {
		r = -ENOSPC;
	} else {
		struct fault_rule *rule = &fr->rules[fr->n++];

		memset(rule, 0, sizeof(*rule));
		rule->st.spec = *spec;
		rule->prng = spec->seed;
		atomic_fetch_add(&fr->live, 1);
		if (fr->also)
			atomic_fetch_add(fr->also, 1);
	}
	pthread_mutex_unlock(&fr->lock);
	return r;
}

void fault_rules_clear(struct fault_rules *fr)
{
	unsigned live = 0;

	pthread_mutex_lock(&fr->lock);
	for (size_t i = 0; i < fr->n; i++)
		live += !fr->rules[i].st.spent;
	fr->n = 0;
	live_sub(fr, live);
	pthread_mutex_unlock(&fr->lock);
}

static bool overlaps(const struct fault_spec *s, uint64_t offset, uint64_t count)
{
	if (!s->length || !count)
		return true;
	/* [offset, offset+count) and [s->offset, s->offset+s->length), written
	 * so that neither end can overflow. */
	return offset < s->offset + s->length && (s->offset <= offset || s->offset - offset < count);
}

bool fault_rules_check(struct fault_rules *fr, unsigned op, uint64_t offset, uint64_t count,
		       struct fault_hit *hit)
{
	bool fired = false;

	if (!atomic_load_explicit(&fr->live, memory_order_relaxed))
		return false;
	pthread_mutex_lock(&fr->lock);
	for (size_t i = 0; i < fr->n && !fired; i++) {
		struct fault_rule *rule = &fr->rules[i];
		const struct fault_spec *s = &rule->st.spec;

		if (rule->st.spent || !(s->ops & op) || !overlaps(s, offset, count))
			continue;
		rule->st.matched++;
		/* The top 53 bits as a double in [0, 1): below RATE fires, so
		 * 1 always does and 0 never. */
		if ((double)(prng_next(&rule->prng) >> 11) * 0x1.0p-53 >= s->rate)
			continue;
		fired = true;
		rule->st.fired++;
		if (s->error)
			fr->injected++;
		if (s->count && rule->st.fired == s->count) {
			rule->st.spent = true;
			live_sub(fr, 1);
		}
		hit->error = -s->error;
		hit->short_write = s->short_write && op == FAULT_OP_WRITE;
		hit->delay_ms = s->delay_ms;
	}
	pthread_mutex_unlock(&fr->lock);
	return fired;
}

size_t fault_rules_get(struct fault_rules *fr, struct fault_rule_status *out, size_t max, uint64_t *injected)
{
	size_t n;

	pthread_mutex_lock(&fr->lock);
	n = fr->n < max ? fr->n : max;
	for (size_t i = 0; i < n; i++)
		out[i] = fr->rules[i].st;
	if (injected)
		*injected = fr->injected;
	pthread_mutex_unlock(&fr->lock);
	return n;
}

void fault_sleep_ms(uint32_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- fault points ---- */

/* The points, and what their failure stands for. docs/faults.md says the
 * same: keep them together. */
static const struct {
	const char *name, *about;
} points_table[] = {
	{ "diff_storage.write", "a write of copied blocks (or of an image write) to the difference storage" },
	{ "diff_storage.read", "a read of a snapshot image's blocks from the difference storage" },
	{ "state.write", "the write of a CBT state file's temporary copy (NAME.cbt.tmp)" },
	{ "state.fsync", "the fsync of a CBT state file's temporary copy" },
	{ "state.rename", "the rename of the temporary copy over NAME.cbt" },
	{ "dirty_log.write", "a write of a disk dirty log: a tracker's NAME.wil, a dm mirror's disk log" },
	{ "dirty_log.sync", "the fdatasync of a disk dirty log" },
};
#define N_POINTS (sizeof(points_table) / sizeof(points_table[0]))

static struct fault_rules points[N_POINTS];
static atomic_uint points_live; /* rules not spent, over every point */
static pthread_once_t points_once = PTHREAD_ONCE_INIT;

static void points_init(void)
{
	for (size_t i = 0; i < N_POINTS; i++) {
		fault_rules_init(&points[i]);
		points[i].also = &points_live;
	}
}

static int point_index(const char *name)
{
	for (size_t i = 0; i < N_POINTS; i++)
		if (strcmp(points_table[i].name, name) == 0)
			return (int)i;
	return -ENOENT;
}

int fault_point_hit(const char *name)
{
	struct fault_hit hit;
	int i;

	if (!atomic_load_explicit(&points_live, memory_order_relaxed))
		return 0;
	i = point_index(name);
	if (i < 0) {
		log_error("fault point %s is not in the table: a bug", name);
		return 0;
	}
	if (!fault_rules_check(&points[i], FAULT_OP_ANY, 0, 0, &hit))
		return 0;
	if (hit.delay_ms)
		fault_sleep_ms(hit.delay_ms);
	if (hit.error)
		log_warn("fault point %s: injecting %s", name, fault_error_name(-hit.error));
	return hit.error;
}

size_t fault_point_count(void)
{
	return N_POINTS;
}

const char *fault_point_name(size_t i)
{
	return i < N_POINTS ? points_table[i].name : NULL;
}

const char *fault_point_about(size_t i)
{
	return i < N_POINTS ? points_table[i].about : NULL;
}

int fault_point_add(const char *name, const struct fault_spec *spec)
{
	struct fault_spec s = *spec;
	int i = point_index(name);

	if (i < 0)
		return i;
	pthread_once(&points_once, points_init);
	s.ops = FAULT_OP_ANY;
	s.offset = s.length = 0;
	s.short_write = false;
	return fault_rules_add(&points[i], &s);
}

int fault_point_clear(const char *name)
{
	int i = name ? point_index(name) : 0;

	if (i < 0)
		return i;
	pthread_once(&points_once, points_init);
	for (size_t k = name ? (size_t)i : 0; k < (name ? (size_t)i + 1 : N_POINTS); k++)
		fault_rules_clear(&points[k]);
	return 0;
}

size_t fault_point_get(size_t i, struct fault_rule_status *out, size_t max, uint64_t *injected)
{
	pthread_once(&points_once, points_init);
	if (i >= N_POINTS) {
		if (injected)
			*injected = 0;
		return 0;
	}
	return fault_rules_get(&points[i], out, max, injected);
}

void fault_points_reset(void)
{
	pthread_once(&points_once, points_init);
	for (size_t i = 0; i < N_POINTS; i++) {
		fault_rules_clear(&points[i]);
		pthread_mutex_lock(&points[i].lock);
		points[i].injected = 0;
		pthread_mutex_unlock(&points[i].lock);
	}
}
