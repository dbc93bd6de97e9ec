// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/*
 * An event generator for the benchmarks: each run puts EVENTGEN_BATCH
 * connection events into hbf's ring (the loader shares it), as the XDP
 * program would for as many new SYNs, so that the daemon's reader can be
 * measured at rates no packet path on a small machine reaches.
 */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "../hbf.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define EVENTGEN_BATCH 256
/* As bpf/events.h under a flood, which wakes the reader for light traffic
 * only. */
#define EVENTS_WAKEUP_BYTES (64 * 1024)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

__u64 eventgen_lost = 0;
__u64 eventgen_seq = 0;

SEC("xdp")
int eventgen(struct xdp_md *ctx)
{
	for (int i = 0; i < EVENTGEN_BATCH; i++) {
		struct conn_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
		if (!ev) {
			__sync_fetch_and_add(&eventgen_lost, 1);
			continue;
		}
		__builtin_memset(ev, 0, sizeof(*ev));
		__u64 seq = __sync_fetch_and_add(&eventgen_seq, 1);
		ev->time_ns = bpf_ktime_get_coarse_ns();
		ev->type = EVENT_CONNECTION;
		ev->family = 4;
		ev->saddr.b[10] = ev->saddr.b[11] = 0xff;
		ev->saddr.b[12] = 198;
		ev->saddr.b[13] = 18;
		ev->saddr.b[14] = seq >> 8;
		ev->saddr.b[15] = seq;
		ev->daddr = ev->saddr;
		ev->sport = seq;
		ev->dport = 443;
		__u64 wake = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= EVENTS_WAKEUP_BYTES ?
				     BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
		bpf_ringbuf_submit(ev, wake);
	}
	return XDP_PASS;
}
