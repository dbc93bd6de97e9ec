/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Lookups of rules with expiry: the exact-address block map, then the LPM
 * tries, where an expired longer prefix must not hide a live shorter one.
 */
#ifndef HBF_LPM_H
#define HBF_LPM_H

#include <bpf/bpf_endian.h>
#include "maps.h"
#include "hot.h"

/* The clock is read only on paths that need it: a rule with an expiry, or an
 * attempt to track. fine: as for clock_ns. */
static __always_inline int rule_live_at(const struct rule *r, int fine)
{
	return r->expires_ns == 0 || r->expires_ns > clock_ns(fine);
}

static __always_inline int rule_live(const struct rule *r)
{
	return rule_live_at(r, 0);
}

struct lpm_retry {
	struct lpm_key key;
	__u32 found;
};

static __always_inline long lpm_retry_step(void *map, struct lpm_retry *c, int fine)
{
	struct rule *r = bpf_map_lookup_elem(map, &c->key);
	if (!r)
		return 1;
	if (rule_live_at(r, fine)) {
		c->found = 1;
		return 1;
	}
	__u32 shorter = r->prefixlen < c->key.prefixlen ? r->prefixlen : c->key.prefixlen;
	if (shorter == 0)
		return 1;
	c->key.prefixlen = shorter - 1;
	return 0;
}

static long block_retry_step(__u64 i, void *ctx)
{
	return lpm_retry_step(&block_prefixes, ctx, 0);
}

static long allow_retry_step(__u64 i, void *ctx)
{
	return lpm_retry_step(&allow_prefixes, ctx, 0);
}

static long allow_retry_step_fine(__u64 i, void *ctx)
{
	return lpm_retry_step(&allow_prefixes, ctx, 1);
}

/* lpm_live finds the longest live prefix holding addr. An expired hit must not
 * hide a shorter live one, so the lookup repeats with a key shorter than the
 * expired prefix (an LPM lookup matches no prefix longer than the key's).
 * That is rare, so it runs in bpf_loop, off the common path. The daemon
 * deletes expired entries. */
static __always_inline struct rule *lpm_live(void *map, void *retry_step, const struct addr *addr, int fine)
{
	struct lpm_retry c = { .key = { .prefixlen = 128, .addr = *addr } };
	struct rule *r = bpf_map_lookup_elem(map, &c.key);
	if (!r || rule_live_at(r, fine))
		return r;
	if (r->prefixlen == 0)
		return NULL;
	c.key.prefixlen = (r->prefixlen < 128 ? r->prefixlen : 128) - 1;
	bpf_loop(128, retry_step, &c, 0);
	if (!c.found)
		return NULL;
	return bpf_map_lookup_elem(map, &c.key);
}

/* filter_bit is the address's bit in either side of block_filter: a
 * multiplicative hash of its two words. The daemon computes the same. */
static __always_inline __u32 filter_bit(const struct addr *a)
{
	const __u64 *w = (const __u64 *)a->b;
	return ((w[0] ^ w[1]) * FILTER_HASH64) >> (64 - FILTER_BITS_SHIFT);
}

/* filter_mask is bit's mask in its word of either side: the top bit is the
 * side's live bit, so bit 63 shares bit 62. */
static __always_inline __u64 filter_mask(__u32 bit)
{
	__u32 pos = bit & 63;
	return 1ULL << (pos == 63 ? 62 : pos);
}

/* filter_words is block_filter's words; NULL cannot happen (a one-entry
 * array), and the checks below take it for a set bit. */
static __always_inline __u64 *filter_words(void)
{
	__u32 zero = 0;
	struct filter_words *f = bpf_map_lookup_elem(&block_filter, &zero);
	return f ? f->w : NULL;
}

/* filter_has reports whether bit is set, counting from the word base of
 * the filter f. */
static __always_inline int filter_has(const __u64 *f, __u32 base, __u32 bit)
{
	return !f || ((READ_ONCE(f[base + (bit >> 6)]) >> (bit & 63)) & 1);
}

/* filter_may_hold reports whether blocks4 or blocks6 may hold the
 * address: false only when its bit is clear on every live side. */
static __always_inline int filter_may_hold(const __u64 *f, const struct addr *a)
{
	if (!f)
		return 1;
	__u32 bit = filter_bit(a);
	__u32 i = 2 * (bit >> 6);
	__u64 w0 = READ_ONCE(f[i]), w1 = READ_ONCE(f[i + 1]);
	if (!((w0 | w1) & FILTER_LIVE))
		return 1;
	__u64 m = filter_mask(bit);
	return ((w0 & FILTER_LIVE) && (w0 & m)) || ((w1 & FILTER_LIVE) && (w1 & m));
}

/* filter_add sets the address's bit on both sides, before it goes into
 * blocks4 or blocks6. */
static __always_inline void filter_add(const struct addr *a)
{
	__u64 *f = filter_words();
	if (!f)
		return;
	__u32 bit = filter_bit(a);
	__u32 i = 2 * (bit >> 6);
	__u64 m = filter_mask(bit);
	__sync_fetch_and_or(&f[i], m);
	__sync_fetch_and_or(&f[i + 1], m);
}

static __always_inline int ipv4_mapped(const struct addr *a)
{
	const __u32 *w = (const __u32 *)a->b;
	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff);
}

/* v4_slash16 is the /16 of an IPv4-mapped address, as a number. */
static __always_inline __u32 v4_slash16(const struct addr *a)
{
	return ((__u32)a->b[12] << 8) | a->b[13];
}

/* v4_prefix_may_hold reports whether a prefix block may hold the
 * IPv4-mapped address: its /16's bit in the filter f. */
static __always_inline int v4_prefix_may_hold(const __u64 *f, const struct addr *a)
{
	return filter_has(f, FILTER_V4_BASE, v4_slash16(a));
}

/* count_block counts a packet from addr dropped against its rule, and
 * notes the rule for a live view at its marks (hot.h). Not atomic: a
 * locked add cost a blocked packet a sixth of its time. Two CPUs dropping
 * for one rule at the same instant can lose an increment here; the drop
 * counters by reason are per CPU and exact. */
static __always_inline int count_block(struct rule *r, const struct addr *addr)
{
	__u64 n = r->packets + 1;
	r->packets = n;
	note_hot(r, addr, n);
	return 1;
}

/* prefix_blocked is blocked's lookup of the prefix blocks: a function the
 * verifier checks once, where inlined into every path of the program it
 * doubled the load time. */
__noinline int prefix_blocked(const struct addr *addr)
{
	if (!addr)
		return 0;
	struct rule *r = lpm_live(&block_prefixes, block_retry_step, addr, 0);
	return r ? count_block(r, addr) : 0;
}

/* exact_rule is the exact block of the address: an IPv4-mapped one's in
 * blocks4, by its last four bytes. */
static __always_inline struct rule *exact_rule(const struct addr *addr, int v4)
{
	if (v4)
		return bpf_map_lookup_elem(&blocks4, &addr->b[12]);
	return bpf_map_lookup_elem(&blocks6, addr);
}

/* blocked reports whether a live block holds the address, and counts the
 * packet against it; f is block_filter's words, v4 whether the address is
 * IPv4-mapped (the caller knows it from the packet). The exact lookup is
 * inlined: every packet asks, and the call cost a blocked packet a tenth
 * of its time. */
static __always_inline int blocked(const __u64 *f, const struct addr *addr, int v4)
{
	if (filter_may_hold(f, addr)) {
		struct rule *r = exact_rule(addr, v4);
		if (r && rule_live(r))
			return count_block(r, addr);
	}
	if ((READ_ONCE(hbf_have_block_prefixes) || READ_ONCE(hbf_scan_prefixes)) && (!v4 || v4_prefix_may_hold(f, addr)))
		return prefix_blocked(addr);
	return 0;
}

/* allow_may_hold reports whether an allow prefix may hold the address:
 * its IPv4 /16's bit (v4: it is IPv4-mapped), or the hash of its first 32
 * bits or of its /64, in the filter f. */
static __always_inline int allow_may_hold(const __u64 *f, const struct addr *a, int v4)
{
	if (v4)
		return filter_has(f, FILTER_ALLOW_V4_BASE, v4_slash16(a));
	if (filter_has(f, FILTER_ALLOW_V6_BASE, (*(const __u32 *)a->b * FILTER_HASH32) >> 16))
		return 1;
	return filter_has(f, FILTER_ALLOW_V6_BASE + FILTER_ALLOW_V6_HASH_WORDS,
			  (*(const __u64 *)a->b * FILTER_HASH64) >> 48);
}

/* allow_prefix_holds is allowlisted's trie lookup, a function the verifier
 * checks once. */
__noinline int allow_prefix_holds(const struct addr *addr)
{
	if (!addr)
		return 0;
	return lpm_live(&allow_prefixes, allow_retry_step, addr, 0) != NULL;
}

/* allow_prefix_holds_fine is allow_prefix_holds for the connection tracer,
 * on its clock. */
__noinline int allow_prefix_holds_fine(const struct addr *addr)
{
	if (!addr)
		return 0;
	return lpm_live(&allow_prefixes, allow_retry_step_fine, addr, 1) != NULL;
}

/* allowlisted reports whether a live allow prefix holds the address; f
 * and v4 are as for blocked. The filter's check is inlined: a blocked
 * source far from every allow, the common case, pays no call. */
static __always_inline int allowlisted(const __u64 *f, const struct addr *addr, int v4)
{
	return allow_may_hold(f, addr, v4) && allow_prefix_holds(addr);
}

static __always_inline int allowlisted_fine(const __u64 *f, const struct addr *addr, int v4)
{
	return allow_may_hold(f, addr, v4) && allow_prefix_holds_fine(addr);
}

#endif
