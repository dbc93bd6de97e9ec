/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Scan blocks: the program blocks a scanner itself, within a budget of
 * blocks per minute that spoofed decoys cannot exceed.
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

static __always_inline __u8 block_scanner(const struct addr *key, __u8 keylen, __u64 now,
					  __u64 *expires)
{
	if (!block_budget(now)) {
		count(COUNTER_BLOCKS_RATE_LIMITED);
		return SCAN_EV_RATE_LIMITED;
	}
	struct rule r = {
		.created_ns = now,
		.prefixlen = keylen,
		.origin = ORIGIN_SCAN,
	};
	__u64 duration = READ_ONCE(hbf_config.block_ns);
	if (duration)
		r.expires_ns = now + duration;
	*expires = r.expires_ns;

	/* A live block of this source would have dropped the packet already, so
	 * an entry already here is an expired one: replace it. */
	long err;
	if (keylen >= 128) {
		filter_add(key);
		if (ipv4_mapped(key))
			err = bpf_map_update_elem(&blocks4, &key->b[12], &r, BPF_ANY);
		else
			err = bpf_map_update_elem(&blocks6, key, &r, BPF_ANY);
	} else {
		/* The lookup must be on before the entry can be found. */
		WRITE_ONCE(hbf_scan_prefixes, 1);
		struct lpm_key k = { .prefixlen = keylen, .addr = *key };
		err = bpf_map_update_elem(&block_prefixes, &k, &r, BPF_ANY);
	}
	if (err) {
		count(COUNTER_BLOCK_FAILURES);
		return SCAN_EV_BLOCK_FAILED;
	}
	count(COUNTER_BLOCKS_ADDED);
	return SCAN_EV_BLOCKED;
}

#endif
