/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Hot rules: the blocks dropping the most, for a live view (hbf top)
 * that must not walk a million blocks each refresh. While the daemon
 * says a view is attached, a block whose drop count reaches a mark
 * notes its address in hot_rules; the daemon drains the map and follows
 * the blocks noted by their counters. The marks are the powers of two
 * up to 1024, then every 1024th packet: a new block shows at its first
 * drops, a busy one every 1024 of them, and the drop path pays a compare
 * and no more while no view is attached.
 */
#ifndef HBF_HOT_H
#define HBF_HOT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "hbf.h"
#include "common.h"

#define HOT_EVERY 1024

/* Set by the daemon while a view of the busiest sources is attached. */
__u32 hbf_hot_watch = 0;

/* Address → the rule's drop count when it was noted. The key's prefix
 * length is the rule's; the daemon masks the address to it. An LRU, so a
 * flood of new sources cannot keep a busy one out: each of its marks
 * notes it again. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct lpm_key);
	__type(value, __u64);
} hot_rules SEC(".maps");

/* at_mark reports whether a drop count of n is one of the marks. */
static __always_inline int at_mark(__u64 n)
{
	return (n & (n < HOT_EVERY ? n - 1 : HOT_EVERY - 1)) == 0;
}

/* note_hot notes the rule holding addr, whose drop count is now n. */
static __always_inline void note_hot(const struct rule *r, const struct addr *addr, __u64 n)
{
	if (!at_mark(n) || !READ_ONCE(hbf_hot_watch))
		return;
	struct lpm_key k = { .prefixlen = r->prefixlen, .addr = *addr };
	bpf_map_update_elem(&hot_rules, &k, &n, BPF_ANY);
}

#endif
