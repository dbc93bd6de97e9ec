/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The program's own blocks, of scanners and of sources over a connection
 * limit: made in the kernel, within one budget of blocks per minute that
 * spoofed decoys cannot exceed.
 */
#ifndef HBF_BUDGET_H
#define HBF_BUDGET_H

#include "maps.h"
#include "lpm.h"

/* block_budget takes one block from the minute's budget; 0 when it is spent. */
static __always_inline int block_budget(__u64 now)
{
	__u32 limit = READ_ONCE(hbf_config.max_blocks_per_min);
	if (!limit)
		return 1;
	__u64 minute = now / (60 * NSEC_PER_SEC);
	for (int i = 0; i < 8; i++) {
		__u64 old = READ_ONCE(hbf_block_budget);
		__u64 next;
		if ((old >> 32) != minute)
			next = (minute << 32) | 1;
		else if ((__u32)old >= limit)
			return 0;
		else
			next = old + 1;
		if (__sync_val_compare_and_swap(&hbf_block_budget, old, next) == old)
			return 1;
	}
	return 0; /* that contended, the budget is being spent fast */
}

/* outlasts reports whether the rule r (NULL: none) ends at or after
 * expires (0: never). */
static __always_inline int outlasts(const struct rule *r, __u64 expires)
{
	if (!r)
		return 0;
	__u64 end = READ_ONCE(r->expires_ns);
	return end == 0 || (expires != 0 && end >= expires);
}

/* block_source blocks key (an address, or the prefix of keylen bits) for
 * the configured duration, with origin (enum rule_origin), and says how
 * it went as an event's flag. */
static __always_inline __u8 block_source(const struct addr *key, __u8 keylen, __u64 now, __u8 origin,
					 __u64 *expires)
{
	if (!block_budget(now)) {
		count(COUNTER_BLOCKS_RATE_LIMITED);
		return SCAN_EV_RATE_LIMITED;
	}
	struct rule r = {
		.created_ns = now,
		.prefixlen = keylen,
		.origin = origin,
	};
	__u64 duration = READ_ONCE(hbf_config.block_ns);
	if (duration)
		r.expires_ns = now + duration;
	*expires = r.expires_ns;

	/* A block already here is an expired one, replaced, but for the
	 * connection tracer's: its connection may have come in through an
	 * interface hbf does not filter, and a longer block (an operator's)
	 * must stay as it is. */
	long err;
	struct lpm_key k = { .prefixlen = keylen, .addr = *key };
	if (keylen >= 128) {
		if (outlasts(exact_rule(key, ipv4_mapped(key)), r.expires_ns))
			return SCAN_EV_BLOCKED;
		filter_add(key);
		if (ipv4_mapped(key))
			err = bpf_map_update_elem(&blocks4, &key->b[12], &r, BPF_ANY);
		else
			err = bpf_map_update_elem(&blocks6, key, &r, BPF_ANY);
	} else {
		struct rule *old = bpf_map_lookup_elem(&block_prefixes, &k);
		if (old && old->prefixlen == keylen && outlasts(old, r.expires_ns))
			return SCAN_EV_BLOCKED;
		/* The lookup must be on before the entry can be found. */
		WRITE_ONCE(hbf_scan_prefixes, 1);
		err = bpf_map_update_elem(&block_prefixes, &k, &r, BPF_ANY);
	}
	if (err) {
		count(COUNTER_BLOCK_FAILURES);
		return SCAN_EV_BLOCK_FAILED;
	}
	count(origin == ORIGIN_SCAN ? COUNTER_BLOCKS_ADDED : COUNTER_LIMIT_BLOCKS);
	return SCAN_EV_BLOCKED;
}

#endif
