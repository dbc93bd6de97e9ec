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
 *   SYN (SYN set; ACK, RST, FIN clear)     -> counted as a port; reported once per
 *                                             attempt; the one that makes a source
 *                                             exceed max_ports distinct ports within
 *                                             the window blocks it (within the
 *                                             minute's budget of blocks) and is dropped
 *   anything else                          -> pass
 *
 * A "source" is an address, or for an off-link IPv6 address its prefix of
 * hbf_config.v6_prefix_len bits: one host owns a whole /64 and can rotate
 * addresses inside it.
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

char __license[] SEC("license") = "Dual BSD/GPL";

/* Make the event and enum types visible to bpf2go. */
const struct conn_event *unused_conn_event __attribute__((unused));
const struct scan_event *unused_scan_event __attribute__((unused));
const enum counter *unused_counter __attribute__((unused));
const enum event_type *unused_event_type __attribute__((unused));
const enum scan_event_flags *unused_scan_event_flags __attribute__((unused));
const enum rule_origin *unused_rule_origin __attribute__((unused));
const enum config_flags *unused_config_flags __attribute__((unused));

static __always_inline int port_ignored(__u16 port)
{
	return (READ_ONCE(hbf_ignored_ports[port >> 6]) >> (port & 63)) & 1;
}

/* ignored_retransmission reports whether a SYN to an ignored port repeats
 * the source's last attempt there, and remembers it. */
static __always_inline int ignored_retransmission(const struct packet *pkt)
{
	struct attempt_key k = { .saddr = pkt->saddr, .sport = pkt->sport, .dport = pkt->dport };
	__u32 *seq = bpf_map_lookup_elem(&ignored_attempts, &k);
	if (seq && *seq == pkt->seq)
		return 1;
	bpf_map_update_elem(&ignored_attempts, &k, &pkt->seq, BPF_ANY);
	return 0;
}

/* attempt handles a SYN (probe == 0) or a stealth probe (probe == 1) that
 * arrived on ifindex and returns the verdict. allowed: the source is known
 * to be allowlisted. It takes no context, so that the XDP and the TC
 * entry points share it. */
__noinline int attempt(__u32 ifindex, const struct packet *pkt, int probe, int allowed)
{
	if (!pkt)
		return XDP_PASS;

	/* Ignored ports are never counted nor a reason to block. */
	if (port_ignored(pkt->dport)) {
		if (probe)
			return drop(COUNTER_DROP_STEALTH);
		if (!ignored_retransmission(pkt))
			report_connection(ifindex, pkt, now_ns());
		return XDP_PASS;
	}

	__u64 now = now_ns();
	__u32 zero = 0;
	struct scan_ports *ports = bpf_map_lookup_elem(&scan_evidence, &zero);
	if (!ports)
		return XDP_PASS; /* cannot happen: a one-entry array */
	__u32 outcome = TRACK_NEW_ATTEMPT;
	__u32 reason = probe ? COUNTER_DROP_STEALTH : COUNTER_DROP_SCAN;

	struct addr key;
	__u8 keylen = tracker_key(pkt, &key);
	outcome = record(pkt, &key, now / 1000000, ports, allowed);
	/* Fail closed: an attempt the tracker could not count must not pass. */
	if (outcome & TRACK_BUSY)
		return drop(COUNTER_DROP_TRACKER_BUSY);

	allowed = allowed || (outcome & TRACK_ALLOWED);
	int monitor = READ_ONCE(hbf_config.flags) & CONFIG_MONITOR;
	if (outcome & TRACK_CROSSED) {
		count(COUNTER_SCANS_DETECTED);
		if (allowed) {
			count(COUNTER_SCANS_ALLOWLISTED);
			report_scan(ifindex, pkt, keylen, now, ports, SCAN_EV_ALLOWLISTED, 0);
		} else if (monitor) {
			count(COUNTER_SCANS_MONITORED);
			report_scan(ifindex, pkt, keylen, now, ports, SCAN_EV_MONITOR, 0);
		} else {
			__u64 expires = 0;
			__u8 flags = block_scanner(&key, keylen, now, &expires);
			report_scan(ifindex, pkt, keylen, now, ports, flags, expires);
			return drop(reason);
		}
	} else if ((outcome & TRACK_FLAGGED) && !allowed && !monitor) {
		return drop(reason);
	}

	if (probe)
		return drop(COUNTER_DROP_STEALTH);
	if (outcome & TRACK_NEW_ATTEMPT)
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

/* decide is the verdict on the frame from data to end, which arrived on
 * ifindex with stripped VLAN tags already taken out: XDP_PASS or XDP_DROP,
 * whichever hook runs it. */
static __always_inline int decide(void *data, void *end, __u32 ifindex, __u32 stripped)
{
	struct packet pkt = {};
	int allowed = 0;

	count(COUNTER_PACKETS);

	enum parse_result r = parse_ip(data, end, &pkt, stripped);
	if (r != PARSE_OK)
		return parse_verdict(r);

	/* The source check needs only the IP header: whatever follows, a blocked
	 * source goes no further. */
	if (blocked(&pkt.saddr)) {
		if (!allowlisted(&pkt.saddr))
			return drop(COUNTER_DROP_BLOCKED);
		count(COUNTER_ALLOWLIST_OVERRIDES);
		allowed = 1;
	}

	r = parse_tcp(data, end, &pkt);
	if (r != PARSE_OK)
		return parse_verdict(r);

	__u8 f = pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN);
	if (f == TCP_SYN)
		return attempt(ifindex, &pkt, 0, allowed);
	if (!(f & (TCP_SYN | TCP_ACK | TCP_RST)) || ((f & TCP_SYN) && (f & (TCP_FIN | TCP_RST))))
		return attempt(ifindex, &pkt, 1, allowed);
	return XDP_PASS;
}

SEC("xdp")
int hbf_xdp(struct xdp_md *ctx)
{
	int verdict = decide((void *)(long)ctx->data, (void *)(long)ctx->data_end, ctx->ingress_ifindex, 0);
	/* With the drops by reason, this accounts for every packet. */
	if (verdict == XDP_PASS)
		count(COUNTER_PASSED);
	return verdict;
}

/* The parser reads at most this far into a frame: the upper layer starts
 * by MAX_HDR_OFF, and a TCP header is at most 60 bytes. */
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
	int verdict = decide((void *)(long)skb->data, (void *)(long)skb->data_end, skb->ingress_ifindex, stripped);
	if (verdict == XDP_DROP)
		return TC_ACT_SHOT;
	count(COUNTER_PASSED);
	return TC_ACT_UNSPEC;
}
