/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Events to the daemon through the ring buffer: new connections and scans.
 */
#ifndef HBF_EVENTS_H
#define HBF_EVENTS_H

#include "maps.h"
#include "parse.h"

/* Waking the reader costs ~1.5 us per event (irq_work, IPI, task wakeup),
 * several times the rest of the SYN path. Connection events therefore do not
 * wake it: it polls every few milliseconds, and is woken early once this much
 * is pending, long before the ring fills. Scan events always wake it. */
#define EVENTS_WAKEUP_BYTES (64 * 1024)

static __always_inline void report_scan(__u32 ifindex, const struct packet *pkt, __u8 keylen,
					__u64 now, const struct scan_ports *ports, __u8 flags,
					__u64 expires)
{
	struct scan_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count(COUNTER_EVENTS_LOST);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->time_ns = now;
	ev->type = EVENT_SCAN;
	ev->family = pkt->family;
	ev->flags = flags;
	ev->ifindex = ifindex;
	ev->saddr = pkt->saddr;
	ev->daddr = pkt->daddr;
	ev->expires_ns = expires;
	__builtin_memcpy(ev->ports, ports->ports, sizeof(ev->ports));
	__builtin_memcpy(ev->ages_ms, ports->ages_ms, sizeof(ev->ages_ms));
	ev->nports = ports->n;
	ev->prefixlen = keylen;
	bpf_ringbuf_submit(ev, BPF_RB_FORCE_WAKEUP);
}

static __always_inline void report_connection(__u32 ifindex, const struct packet *pkt, __u64 now)
{
	count(COUNTER_NEW_CONNECTIONS);
	struct conn_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count(COUNTER_EVENTS_LOST);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->time_ns = now;
	ev->type = EVENT_CONNECTION;
	ev->family = pkt->family;
	ev->ifindex = ifindex;
	ev->saddr = pkt->saddr;
	ev->daddr = pkt->daddr;
	ev->sport = pkt->sport;
	ev->dport = pkt->dport;
	__u64 wake = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= EVENTS_WAKEUP_BYTES ?
			     BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(ev, wake);
}

#endif
