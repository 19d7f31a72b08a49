/* Fault injection, for the tests that prove what the daemon promises when its
 * storage fails. A rule says which requests fail (their kind, the bytes they
 * touch, a chance per request from a PRNG of its own, how many times) and how
 * (an errno, a delay, a torn write). A rule set (struct fault_rules) is what
 * the `faulty` filter keeps for one device; the named fault points are one
 * rule set each in a fixed table, checked by fault_point_hit() from code deep
 * in the daemon (the difference storage, the CBT state files, the dirty logs).
 * Rules are set only through the control socket; with none set, a check is
 * one atomic load. */
#ifndef BDF_COMMON_FAULT_H
#define BDF_COMMON_FAULT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum fault_op {
	FAULT_OP_READ = 1u << 0,
	FAULT_OP_WRITE = 1u << 1,
	FAULT_OP_FLUSH = 1u << 2,
	FAULT_OP_TRIM = 1u << 3,
	FAULT_OP_ZERO = 1u << 4,
	FAULT_OP_ANY = (1u << 5) - 1,
};

struct fault_spec {
	unsigned ops;            /* the FAULT_OP_* it applies to */
	int error;               /* errno to inject (EIO, ENOSPC), or 0: a delay only */
	double rate;             /* chance that a matching request fires it, 0..1 */
	uint64_t offset, length; /* only requests that overlap these bytes; length 0: any */
	uint64_t count;          /* fire this many times, then the rule is spent; 0: no end */
	bool short_write;        /* a write: its first half goes down before the error */
	uint32_t delay_ms;       /* a request that fires it waits this long first */
	uint64_t seed;           /* the rule's PRNG */
};

/* What a check found: the request waits DELAY_MS, then fails with ERROR
 * (negative errno) unless it is 0, after writing its first half if SHORT. */
struct fault_hit {
	int error;
	bool short_write;
	uint32_t delay_ms;
};

/* A rule as fault_rules_get() reports it. */
struct fault_rule_status {
	struct fault_spec spec;
	uint64_t matched; /* requests it matched (kind and range), fired or not */
	uint64_t fired;   /* faults it injected */
	bool spent;
};

#define FAULT_MAX_RULES 16

struct fault_rule {
	struct fault_rule_status st;
	uint64_t prng;
};

/* Rules and what they did. LIVE counts the rules not spent: the fast path. */
struct fault_rules {
	atomic_uint live;
	atomic_uint *also; /* another count kept with LIVE (the points' total), or NULL */
	pthread_mutex_t lock; /* a leaf: nothing is taken, nor waited for, under it */
	struct fault_rule rules[FAULT_MAX_RULES];
	size_t n;
	uint64_t injected; /* by every rule, spent or cleared ones too */
};

/* -EINVAL with a message if SPEC is not a rule (a rate outside 0..1, a short
 * write that fails nothing or that no write can fire, a rule that does
 * nothing). */
int fault_spec_check(const struct fault_spec *spec, char *err, size_t errlen);
/* The names the control commands use: "read".."zero", "any"; "EIO",
 * "ENOSPC", "none". -EINVAL for another. */
int fault_op_parse(const char *s, unsigned *ops);
const char *fault_op_name(unsigned ops);
int fault_error_parse(const char *s, int *error);
const char *fault_error_name(int error);
/* "OFFSET:LENGTH" in bytes (K, M, G suffixes), LENGTH at least 1. */
int fault_range_parse(const char *s, uint64_t *offset, uint64_t *length);
/* "0.25", "1", "0": a chance. */
int fault_rate_parse(const char *s, double *rate);

void fault_rules_init(struct fault_rules *fr);
void fault_rules_destroy(struct fault_rules *fr);
/* Add SPEC (checked), after the rules already there: -ENOSPC past
 * FAULT_MAX_RULES. */
int fault_rules_add(struct fault_rules *fr, const struct fault_spec *spec);
/* Remove every rule (the count of injected faults stays). */
void fault_rules_clear(struct fault_rules *fr);
/* Does a request of kind OP on [offset, offset+count) fire a rule? The first
 * rule, in the order they were added, that matches it and whose draw fires
 * gives *HIT; a rule that matches but does not fire lets the next try.
 * A request of no bytes (a flush) overlaps every range. */
bool fault_rules_check(struct fault_rules *fr, unsigned op, uint64_t offset, uint64_t count,
		       struct fault_hit *hit);
/* The rules (at most MAX) into OUT; their number. *INJECTED: the faults
 * injected so far (may be NULL). */
size_t fault_rules_get(struct fault_rules *fr, struct fault_rule_status *out, size_t max, uint64_t *injected);

/* Sleep MS milliseconds, whatever signals come. */
void fault_sleep_ms(uint32_t ms);

/* ---- fault points ---- */

/* Check point NAME (one of the table's, see fault_point_name): a negative
 * errno to inject, after any delay its rule asks for, or 0. One atomic load
 * when no point has a rule. */
int fault_point_hit(const char *name);
/* The table: fault_point_count() points, each with a name and what failing
 * it means. */
size_t fault_point_count(void);
const char *fault_point_name(size_t i);
const char *fault_point_about(size_t i);
/* Add a rule to point NAME (its ops and range are ignored): -ENOENT if there
 * is no such point, else as fault_rules_add(). */
int fault_point_add(const char *name, const struct fault_spec *spec);
/* Clear point NAME's rules (-ENOENT if there is none), or with NULL every
 * point's. */
int fault_point_clear(const char *name);
/* Point I's rules, as fault_rules_get(). */
size_t fault_point_get(size_t i, struct fault_rule_status *out, size_t max, uint64_t *injected);
/* Every point without rules and with nothing injected: as at start (tests). */
void fault_points_reset(void);

#endif
