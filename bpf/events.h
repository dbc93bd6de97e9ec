/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Events to the daemon through the ring buffer: new connections and scans.
 */
#ifndef HBF_EVENTS_H
#define HBF_EVENTS_H

#include "maps.h"
#include "parse.h"

/* Waking the reader costs ~1.5 us per event in the kernel (irq_work, IPI,
 * task wakeup), several times the rest of the SYN path, and more in the
 * daemon. Connection events therefore wake it only while traffic is light:
 * when the last window of EVENTS_WAKEUP_WINDOW_NS (the reader's poll
 * interval) held at most EVENTS_LIGHT_WINDOW of them, the first
 * EVENTS_WAKEUPS_PER_WINDOW of this one wake it, and light traffic is read
 * at once. The events of a flood wait for the reader's poll, or for the
 * wakeup once EVENTS_WAKEUP_BYTES are pending (long before the ring fills),
 * and cost no more wakeups than with none. The counts race between CPUs:
 * a few wakeups more or fewer, never a lost event. Scan events always
 * wake the reader. */
#define EVENTS_WAKEUP_BYTES (64 * 1024)
#define EVENTS_WAKEUP_WINDOW_NS (20 * 1000 * 1000)
#define EVENTS_WAKEUPS_PER_WINDOW 2
#define EVENTS_LIGHT_WINDOW 8

/* The window of connection events: its start on now_ns(), its events and
 * wakeups so far, and the events of the window before. */
__u64 hbf_events_window_ns = 0;
__u32 hbf_events_in_window = 0;
__u32 hbf_events_woken = 0;
__u32 hbf_events_last_window = 0;

/* connection_wakeup counts a connection event and decides whether it wakes
 * the reader. */
static __always_inline __u64 connection_wakeup(__u64 now)
{
	__u64 start = READ_ONCE(hbf_events_window_ns);
	if (now - start >= EVENTS_WAKEUP_WINDOW_NS) {
		/* Past two windows, the one before this was empty. */
		__u32 last = now - start >= 2 * EVENTS_WAKEUP_WINDOW_NS ? 0 : READ_ONCE(hbf_events_in_window);
		WRITE_ONCE(hbf_events_last_window, last);
		WRITE_ONCE(hbf_events_window_ns, now);
		WRITE_ONCE(hbf_events_in_window, 0);
		WRITE_ONCE(hbf_events_woken, 0);
	}
	WRITE_ONCE(hbf_events_in_window, READ_ONCE(hbf_events_in_window) + 1);
	__u32 woken = READ_ONCE(hbf_events_woken);
	if (READ_ONCE(hbf_events_last_window) <= EVENTS_LIGHT_WINDOW && woken < EVENTS_WAKEUPS_PER_WINDOW) {
		WRITE_ONCE(hbf_events_woken, woken + 1);
		return BPF_RB_FORCE_WAKEUP;
	}
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= EVENTS_WAKEUP_BYTES ?
		       BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

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
	bpf_ringbuf_submit(ev, connection_wakeup(now));
}

#endif
