// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/*
 * The semantic reference of the benchmarks: the least code that keeps the
 * promises hbf makes of every packet, on hbf's own maps (maps.h's
 * declarations; the loader shares the rules' maps with a loaded hbf), so
 * that hbf is measured against what its promises cost and no more. Per packet: the packet and passed counters; the source's exact
 * block, with its expiry and its drop counter; the prefix blocks only when
 * there are any; the allowlist only on a hit. Per SYN, in addition: one
 * ring-buffer event and one update of the source's state.
 *
 * It parses Ethernet, one IPv4 or IPv6 header and TCP, and trusts the rest:
 * what hbf's parser does beyond that (VLANs, options, extension headers,
 * fragments, truncation) is its own cost, which this program leaves out.
 * Never attached: it runs in benchmarks only.
 */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "../hbf.h"
#include "../common.h"
#include "../parse.h"
#include "../maps.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Set when block_prefixes holds an entry, as hbf's hint is. */
__u32 ref_have_prefixes = 0;

/* One word of state per source: its last attempt's time. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 18);
	__type(key, struct addr);
	__type(value, __u64);
} ref_sources SEC(".maps");

static __always_inline int ref_live(const struct rule *r)
{
	return r->expires_ns == 0 || r->expires_ns > bpf_ktime_get_coarse_ns();
}

/* ref_blocked: exact is the source's exact block map, key its key there. */
static __always_inline int ref_blocked(const struct addr *src, void *exact, const void *key)
{
	struct rule *r = bpf_map_lookup_elem(exact, key);
	if (!r || !ref_live(r)) {
		r = NULL;
		if (READ_ONCE(ref_have_prefixes)) {
			struct lpm_key k = { .prefixlen = 128, .addr = *src };
			r = bpf_map_lookup_elem(&block_prefixes, &k);
			if (r && !ref_live(r))
				r = NULL;
		}
	}
	if (!r)
		return 0;
	struct lpm_key k = { .prefixlen = 128, .addr = *src };
	if (bpf_map_lookup_elem(&allow_prefixes, &k))
		return 0;
	__sync_fetch_and_add(&r->packets, 1);
	return 1;
}

SEC("xdp")
int reference(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct addr src = {}, dst = {};
	__u8 *l4;

	count(COUNTER_PACKETS);
	__u8 *eth = data;
	if ((void *)(eth + 14) > end)
		goto drop;
	__u16 proto = *(__u16 *)(eth + 12);
	__u8 *ip = eth + 14;
	if (proto == bpf_htons(0x0800)) {
		if ((void *)(ip + 20) > end)
			goto drop;
		/* hbf's own writer: a key written in bytes would stall the
		 * hash's word loads, and a stall is no promise. */
		map_ipv4(&src, *(__be32 *)(ip + 12));
		map_ipv4(&dst, *(__be32 *)(ip + 16));
		if (ref_blocked(&src, &blocks4, &src.b[12]))
			goto drop;
		if (ip[9] != 6)
			goto pass;
		l4 = ip + (ip[0] & 0x0f) * 4;
	} else if (proto == bpf_htons(0x86DD)) {
		if ((void *)(ip + 40) > end)
			goto drop;
		__builtin_memcpy(&src, ip + 8, 16);
		__builtin_memcpy(&dst, ip + 24, 16);
		if (ref_blocked(&src, &blocks6, &src))
			goto drop;
		if (ip[6] != 6)
			goto pass;
		l4 = ip + 40;
	} else {
		goto pass;
	}
	if ((void *)(l4 + 20) > end)
		goto drop;
	if ((l4[13] & 0x17) != 0x02) /* not a SYN */
		goto pass;

	__u64 now = bpf_ktime_get_coarse_ns();
	bpf_map_update_elem(&ref_sources, &src, &now, BPF_ANY);
	struct conn_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (ev) {
		__builtin_memset(ev, 0, sizeof(*ev));
		ev->time_ns = now;
		ev->type = EVENT_CONNECTION;
		ev->saddr = src;
		ev->daddr = dst;
		ev->sport = bpf_ntohs(*(__u16 *)l4);
		ev->dport = bpf_ntohs(*(__u16 *)(l4 + 2));
		bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
	}
pass:
	count(COUNTER_PASSED);
	return XDP_PASS;
drop:
	count(COUNTER_DROP_BLOCKED);
	return XDP_DROP;
}
