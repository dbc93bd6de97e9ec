// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/*
 * hbf's data plane: one program that decides every packet on its own, built
 * for two hooks from the same decide(): XDP (hbf_xdp), or TC ingress through
 * TCX beside other programs (hbf_tc).
 *
 *   headers it cannot read whole           -> drop, counted by reason (parse.h;
 *                                             the rules are in docs/security.md)
 *   blocked source (exact hash, then LPM)  -> drop, unless allowlisted; checked as
 *                                             soon as the IP header is whole
 *   TCP stealth probe (NULL, FIN, XMAS, SYN+FIN, SYN+RST) -> counted as a port, dropped
 *   SYN (SYN set; ACK, RST, FIN clear)     -> counted as a port (every port but the
 *                                             ignored ones, or with --count-ports
 *                                             closed only closed ones); reported once
 *                                             per attempt
 *   UDP datagram to a closed port of the   -> counted as a port (UDP 53 and TCP 53
 *   host (no socket, not forwarded, not       are two); never reported alone
 *   ignored, not a late answer)
 *   the attempt that makes a source exceed -> blocks it (within the minute's budget
 *   max_ports distinct ports in the window    of blocks), and is dropped
 *   a SYN or datagram to a port with a     -> dropped while the source is over the
 *   limit that throttles (limit.h)            limit (UDP datagrams are counted here)
 *   anything else                          -> pass
 *
 * A "source" is an address, or for an off-link IPv6 address its prefix of
 * hbf_config.v6_prefix_len bits: one host owns a whole /64 and can rotate
 * addresses inside it.
 *
 * This file is the verdict; the steps live by concern: parse.h (headers),
 * maps.h, lpm.h (block and allow lookups), tracker.h (the ports a source
 * tried), budget.h (blocks a minute), events.h, closed.h (whether a port
 * is closed: sockets, conntrack, forwarded ports), limit.h (connection
 * limits, and the connection tracer that counts TCP's).
 *
 * The larger steps are global functions: the verifier checks each once, on
 * its own, instead of once for every path that leads to it.
 */

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "hbf.h"
#include "common.h"
#include "parse.h"
#include "maps.h"
#include "lpm.h"
#include "tracker.h"
#include "budget.h"
#include "events.h"
#include "closed.h"
#include "limit.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Make the event and enum types visible to bpf2go. */
const struct conn_event *unused_conn_event __attribute__((unused));
const struct scan_event *unused_scan_event __attribute__((unused));
const enum counter *unused_counter __attribute__((unused));
const enum event_type *unused_event_type __attribute__((unused));
const enum scan_event_flags *unused_scan_event_flags __attribute__((unused));
const enum rule_origin *unused_rule_origin __attribute__((unused));
const enum config_flags *unused_config_flags __attribute__((unused));
const enum port_proto *unused_port_proto __attribute__((unused));
const struct limit_event *unused_limit_event __attribute__((unused));
const enum limit_flags *unused_limit_flags __attribute__((unused));
const enum limit_layout *unused_limit_layout __attribute__((unused));
const enum filter_layout *unused_filter_layout __attribute__((unused));

/* ignored_retransmission reports whether a SYN the tracker does not count
 * repeats the source's last attempt there, and remembers it. */
static __always_inline int ignored_retransmission(const struct packet *pkt)
{
	struct attempt_key k = { .saddr = pkt->saddr, .sport = pkt->sport, .dport = pkt->dport };
	__u32 *seq = bpf_map_lookup_elem(&ignored_attempts, &k);
	if (seq && *seq == pkt->seq)
		return 1;
	bpf_map_update_elem(&ignored_attempts, &k, &pkt->seq, BPF_ANY);
	return 0;
}

enum attempt_kind {
	ATTEMPT_SYN,       /* counted */
	ATTEMPT_PROBE,     /* a stealth probe: counted, and dropped */
	ATTEMPT_UNCOUNTED, /* a SYN to a port that does not count: reported only */
	ATTEMPT_UDP,       /* a datagram to a closed port: counted, never reported alone */
};

/* attempt handles a SYN, a stealth probe or a UDP datagram (kind) that
 * arrived on ifindex and returns the verdict. allowed: the source is known
 * to be allowlisted. It takes no context, so that the XDP and the TC
 * entry points share it. */
__noinline int attempt(__u32 ifindex, const struct packet *pkt, int kind, int allowed)
{
	if (!pkt)
		return XDP_PASS;

	if (kind == ATTEMPT_UNCOUNTED) {
		count(COUNTER_SYNS_UNCOUNTED);
		if (!ignored_retransmission(pkt))
			report_connection(ifindex, pkt, now_ns());
		return XDP_PASS;
	}
	if (kind == ATTEMPT_UDP)
		count(COUNTER_UDP_ATTEMPTS);

	__u64 now = now_ns();
	__u32 zero = 0;
	struct scan_ports *ports = bpf_map_lookup_elem(&scan_evidence, &zero);
	if (!ports)
		return XDP_PASS; /* cannot happen: a one-entry array */
	__u32 outcome = TRACK_NEW_ATTEMPT;
	__u32 reason = kind == ATTEMPT_PROBE ? COUNTER_DROP_STEALTH : COUNTER_DROP_SCAN;

	struct addr key;
	__u8 keylen = tracker_key(pkt, &key);
	outcome = record(pkt, &key, now / 1000000, ports, allowed);
	/* Fail closed: an attempt the tracker could not count must not pass. */
	if (outcome & TRACK_BUSY)
		return drop(COUNTER_DROP_TRACKER_BUSY);

	allowed = allowed || (outcome & TRACK_ALLOWED);
	__u32 flags = READ_ONCE(hbf_config.flags);
	int passive = report_only(pkt);
	if (outcome & TRACK_CROSSED) {
		count(COUNTER_SCANS_DETECTED);
		if (kind == ATTEMPT_UDP)
			count(COUNTER_UDP_SCANS_DETECTED);
		if (allowed) {
			count(COUNTER_SCANS_ALLOWLISTED);
			report_scan(ifindex, pkt, keylen, now, ports, SCAN_EV_ALLOWLISTED, 0);
		} else if (flags & CONFIG_MONITOR) {
			count(COUNTER_SCANS_MONITORED);
			report_scan(ifindex, pkt, keylen, now, ports, SCAN_EV_MONITOR, 0);
		} else if (passive) {
			report_scan(ifindex, pkt, keylen, now, ports, SCAN_EV_REPORT_ONLY, 0);
		} else {
			__u64 expires = 0;
			__u8 ev = block_source(&key, keylen, now, ORIGIN_SCAN, &expires);
			report_scan(ifindex, pkt, keylen, now, ports, ev, expires);
			return drop(reason);
		}
	} else if ((outcome & TRACK_FLAGGED) && !allowed && !passive) {
		return drop(reason);
	}

	if (kind == ATTEMPT_PROBE)
		return drop(COUNTER_DROP_STEALTH);
	if (kind == ATTEMPT_SYN && (outcome & TRACK_NEW_ATTEMPT))
		report_connection(ifindex, pkt, now);
	return XDP_PASS;
}

/* parse_verdict turns what the parser could not take further into a verdict:
 * pass what is not for us, drop the rest by reason. */
static __always_inline int parse_verdict(enum parse_result r)
{
	switch (r) {
	case PARSE_PASS:
		return XDP_PASS;
	case PARSE_VLAN_DEPTH:
		return drop(COUNTER_DROP_VLAN_DEPTH);
	case PARSE_EXT_DEPTH:
		return drop(COUNTER_DROP_EXT_DEPTH);
	case PARSE_TINY_FRAGMENT:
		return drop(COUNTER_DROP_TINY_FRAGMENT);
	default:
		return drop(COUNTER_DROP_MALFORMED);
	}
}

/* ingress_ifindex is the device the packet arrived on, read only where an
 * event needs it: at XDP it takes two dependent loads (the receive queue,
 * then its device), which every packet paid up front. */
static __always_inline __u32 ingress_ifindex(void *ctx, int xdp)
{
	if (xdp)
		return ((struct xdp_md *)ctx)->ingress_ifindex;
	return ((struct __sk_buff *)ctx)->ingress_ifindex;
}

/* udp_datagram decides a UDP datagram of a source not blocked: only one to
 * a closed port of the host counts. now: the clock if read, or 0. */
static __always_inline int udp_datagram(void *ctx, int xdp, const struct packet *pkt, int allowed, __u64 now)
{
	if (READ_ONCE(hbf_config.flags) & CONFIG_UDP_OFF)
		return XDP_PASS;
	if (late_answer(pkt) || !closed_port(ctx, xdp, pkt, hbf_ignored_udp, hbf_served_udp, now))
		return XDP_PASS;
	return attempt(ingress_ifindex(ctx, xdp), pkt, ATTEMPT_UDP, allowed);
}

/* syn_kind says whether a SYN counts: on any port but an ignored one, or
 * with --count-ports closed, only on a closed port. */
static __always_inline int syn_kind(void *ctx, int xdp, const struct packet *pkt)
{
	if (READ_ONCE(hbf_config.flags) & CONFIG_COUNT_CLOSED)
		return closed_port(ctx, xdp, pkt, hbf_ignored_tcp, hbf_served_tcp, 0) ? ATTEMPT_SYN : ATTEMPT_UNCOUNTED;
	return port_in(hbf_ignored_tcp, pkt->dport) ? ATTEMPT_UNCOUNTED : ATTEMPT_SYN;
}

/* decide is the verdict on the frame from data to end, with stripped VLAN
 * tags already taken out: XDP_PASS or XDP_DROP, whichever hook runs it.
 * ctx is the hook's, for the socket lookups and the device: XDP's when xdp
 * is set, else TC's. */
static __always_inline int decide(void *ctx, int xdp, void *data, void *end, __u32 stripped)
{
	struct packet pkt = {};
	int allowed = 0;

	/* No count of every packet: each ends in one counter, passed or a
	 * drop's reason, and the daemon adds them up. */
	enum parse_result r = parse_ip(data, end, &pkt, stripped);
	if (r != PARSE_OK)
		return parse_verdict(r);

	/* The source check needs only the IP header: whatever follows, a blocked
	 * source goes no further. */
	const __u64 *filter = filter_words();
	/* An IPv4 packet's source is IPv4-mapped without a look. */
	int v4 = pkt.family == 4 || ipv4_mapped(&pkt.saddr);
	if (blocked(filter, &pkt.saddr, v4)) {
		if (!allowlisted(filter, &pkt.saddr, v4))
			return drop(COUNTER_DROP_BLOCKED);
		count(COUNTER_ALLOWLIST_OVERRIDES);
		allowed = 1;
	}

	r = parse_l4(data, end, &pkt);
	if (r != PARSE_OK)
		return parse_verdict(r);
	if (pkt.proto == PROTO_UDP) {
		__u64 now = 0;
		if (port_in(hbf_limited_udp, pkt.dport)) {
			/* Read once, for the limit and the open-port cache. */
			now = now_ns();
			if (throttled(&pkt, 1, allowed, now))
				return drop(COUNTER_DROP_LIMIT);
		}
		return udp_datagram(ctx, xdp, &pkt, allowed, now);
	}

	__u8 f = pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN);
	if (f == TCP_SYN) {
		if (port_in(hbf_limited_tcp, pkt.dport) && throttled(&pkt, 0, allowed, 0))
			return drop(COUNTER_DROP_LIMIT);
		return attempt(ingress_ifindex(ctx, xdp), &pkt, syn_kind(ctx, xdp, &pkt), allowed);
	}
	/* Stealth probes are dropped; they count on any port but an ignored
	 * one, open or not: no client sends them. */
	if (!(f & (TCP_SYN | TCP_ACK | TCP_RST)) || ((f & TCP_SYN) && (f & (TCP_FIN | TCP_RST)))) {
		if (port_in(hbf_ignored_tcp, pkt.dport))
			return drop(COUNTER_DROP_STEALTH);
		return attempt(ingress_ifindex(ctx, xdp), &pkt, ATTEMPT_PROBE, allowed);
	}
	return XDP_PASS;
}

SEC("xdp")
int hbf_xdp(struct xdp_md *ctx)
{
	int verdict = decide(ctx, 1, (void *)(long)ctx->data, (void *)(long)ctx->data_end, 0);
	/* With the drops by reason, this accounts for every packet. */
	if (verdict == XDP_PASS)
		count(COUNTER_PASSED);
	return verdict;
}

/* The parser reads at most this far into a frame: the upper layer starts
 * by MAX_HDR_OFF, and a TCP header is at most 60 bytes (UDP's, 8). */
#define TC_HEADERS_MAX (MAX_HDR_OFF + 60)

/* hbf_tc makes the same decisions at TC ingress, through TCX, beside the
 * other programs there. The stack may hold a frame's headers outside the
 * skb's linear part: they are pulled in first, and only then (a pull
 * copies, when the skb is shared with a tap). A drop ends the chain; a
 * pass lets the next program decide (TCX_NEXT). */
SEC("tcx/ingress")
int hbf_tc(struct __sk_buff *skb)
{
	__u32 want = skb->len < TC_HEADERS_MAX ? skb->len : TC_HEADERS_MAX;
	if ((void *)(long)skb->data + want > (void *)(long)skb->data_end)
		bpf_skb_pull_data(skb, want); /* on failure, the parser finds the headers cut short */
	/* With rx VLAN offload, or the stack's own untagging before TC, the
	 * outer tag is in vlan_tci, no longer in the frame. */
	__u32 stripped = skb->vlan_present ? 1 : 0;
	int verdict = decide(skb, 0, (void *)(long)skb->data, (void *)(long)skb->data_end, stripped);
	if (verdict == XDP_DROP)
		return TC_ACT_SHOT;
	count(COUNTER_PASSED);
	return TC_ACT_UNSPEC;
}
