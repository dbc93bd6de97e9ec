/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing for the XDP program. Wire formats are declared here without
 * bitfields, so the code reads the same on either endianness, and every read
 * is bounds-checked against data_end and against the lengths the headers
 * claim (padding is never parsed as a header).
 */
#ifndef HBF_PARSE_H
#define HBF_PARSE_H

#include <linux/types.h>
#include <bpf/bpf_endian.h>
#include "hbf.h"

#define ETH_P_IPV4 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8

#define PROTO_TCP 6
#define PROTO_UDP 17
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60

/* VLAN tags skipped (802.1Q and 802.1ad, so QinQ fits); a deeper stack is dropped. */
#define VLAN_MAX_DEPTH 2
/* IPv6 extension headers walked before the upper layer; a longer chain, or
 * one that takes the upper layer past MAX_HDR_OFF, is dropped. */
#define IPV6_EXT_MAX 8
/* Upper bound for header offsets, so the verifier can bound packet pointers. */
#define MAX_HDR_OFF 2048

/* Fields that share a byte or a word with others. */
#define IP_VERSION(b) ((b) >> 4)         /* IPv4 ver_ihl, IPv6's first byte */
#define IPV4_IHL(ver_ihl) ((ver_ihl) & 0x0f) /* header length in 32-bit words */
#define IPV4_FRAG_OFFSET 0x1fff          /* of frag_off: offset in 8-byte units */
#define IPV4_MF 0x2000                   /* of frag_off: more fragments follow */
#define IPV6_FRAG_UNITS(fo) ((fo) >> 3)  /* of frag_off: offset in 8-byte units */
#define IPV6_FRAG_M 1                    /* of frag_off: more fragments follow */
#define TCP_DOFF(doff_res) ((doff_res) >> 4) /* header length in 32-bit words */

/*
 * pkt->l3_off is at most 14 + VLAN_MAX_DEPTH * 4 bytes, but the verifier loses
 * that bound when the value goes through the packet struct on the stack, and
 * refuses a packet pointer it cannot bound. The mask gives it one back and
 * keeps every value parse_ip can write.
 */
#define L3_OFF_BOUND 0xff

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

struct eth_hdr {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

struct ipv4_hdr {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 proto;
	__be16 check;
	__be32 saddr;
	__be32 daddr;
};

struct ipv6_hdr {
	__be32 ver_tc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	struct addr saddr;
	struct addr daddr;
};

struct ipv6_ext_hdr {
	__u8 nexthdr;
	__u8 len;
};

struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-byte units << 3 | M flag */
	__be32 id;
};

struct udp_hdr {
	__be16 sport;
	__be16 dport;
	__be16 len;
	__be16 check;
};

struct tcp_hdr {
	__be16 sport;
	__be16 dport;
	__be32 seq;
	__be32 ack_seq;
	__u8 doff_res;
	__u8 flags;
	__be16 window;
	__be16 check;
	__be16 urg_ptr;
};

/*
 * What a parse step found. Every value but PARSE_OK and PARSE_PASS is a drop,
 * each with its own counter: nothing the parser cannot read passes silently.
 */
enum parse_result {
	PARSE_OK,
	PARSE_PASS,          /* not for us: not IP, neither TCP nor UDP, or a later fragment */
	PARSE_MALFORMED,     /* a header is truncated or inconsistent */
	PARSE_VLAN_DEPTH,    /* more than VLAN_MAX_DEPTH tags */
	PARSE_EXT_DEPTH,     /* more than IPV6_EXT_MAX extension headers, or past MAX_HDR_OFF */
	PARSE_TINY_FRAGMENT, /* RFC 1858: TCP or UDP header not whole in the first fragment,
			      * or the TCP header overlapped */
};

/* l3_end when the IP header gives no length (IPv4 total length 0, IPv6
 * payload length 0): BIG TCP and jumbograms, bounded by the frame alone. */
#define L3_END_FRAME 0xffffffff

struct packet {
	struct addr saddr;
	struct addr daddr;
	__u32 l3_off;
	__u32 l3_end;         /* end of the IP datagram as its header claims */
	__u8 family;
	__u8 first_fragment;  /* the datagram is fragmented and this is its first fragment */
	__u8 tcp_flags;
	__u8 proto;           /* PROTO_TCP or PROTO_UDP */
	__u16 sport;
	__u16 dport;
	__u32 seq;
};

/* map_ipv4 writes the IPv4-mapped address ::ffff:v4 as two 64-bit words:
 * the block filter reads it back so, and a load that spans two smaller
 * stores cannot be forwarded from them (a stall of a dozen cycles). */
static __always_inline void map_ipv4(struct addr *a, __be32 v4)
{
	__u64 *w = (__u64 *)a->b;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	__u64 lo = 0xffff0000ULL, hi = (__u64)v4 << 32;
#else
	__u64 lo = (__u64)0x0000ffffULL << 32, hi = v4;
#endif
	w[0] = 0;
	w[1] = lo | hi;
}

/* parse_ip finds the IP header and reads the addresses: all the block check
 * needs. Nothing past the fixed IP header is trusted yet. stripped is how
 * many VLAN tags the stack already took out of the frame (at TC, the
 * outer tag may be in skb->vlan_tci): they count toward the depth, so
 * that both hooks drop the same stacks; the tags in the frame are added. */
static __always_inline enum parse_result parse_ip(void *data, void *end, struct packet *pkt, __u32 stripped)
{
	struct eth_hdr *eth = data;
	__u32 off = sizeof(*eth);
	__be16 proto;

	if ((void *)(eth + 1) > end)
		return PARSE_MALFORMED;
	proto = eth->proto;

#pragma unroll
	for (int i = 0; i < VLAN_MAX_DEPTH; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		struct vlan_hdr *vlan = data + off;
		if ((void *)(vlan + 1) > end)
			return PARSE_MALFORMED;
		proto = vlan->proto;
		off += sizeof(*vlan);
		stripped++;
	}
	if (stripped > VLAN_MAX_DEPTH)
		return PARSE_VLAN_DEPTH;

	pkt->l3_off = off;
	if (proto == bpf_htons(ETH_P_IPV4)) {
		struct ipv4_hdr *ip = data + off;
		if ((void *)(ip + 1) > end || IP_VERSION(ip->ver_ihl) != 4)
			return PARSE_MALFORMED;
		pkt->family = 4;
		map_ipv4(&pkt->saddr, ip->saddr);
		map_ipv4(&pkt->daddr, ip->daddr);
		return PARSE_OK;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6_hdr *ip6 = data + off;
		if ((void *)(ip6 + 1) > end || IP_VERSION(((__u8 *)ip6)[0]) != 6)
			return PARSE_MALFORMED;
		pkt->family = 6;
		__builtin_memcpy(&pkt->saddr, &ip6->saddr, sizeof(pkt->saddr));
		__builtin_memcpy(&pkt->daddr, &ip6->daddr, sizeof(pkt->daddr));
		return PARSE_OK;
	}
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return PARSE_VLAN_DEPTH;
	return PARSE_PASS;
}

/* A header that should be in the frame is not: in the first fragment of a
 * fragmented datagram that is a tiny fragment, otherwise a truncated frame. */
static __always_inline enum parse_result cut_short(const struct packet *pkt)
{
	return pkt->first_fragment ? PARSE_TINY_FRAGMENT : PARSE_MALFORMED;
}

static __always_inline int transport(__u8 proto)
{
	return proto == PROTO_TCP || proto == PROTO_UDP;
}

/* ipv4_upper finds the TCP or UDP header of an IPv4 packet parse_ip accepted. */
static __always_inline enum parse_result ipv4_upper(void *data, void *end, struct packet *pkt, __u32 *l4_off)
{
	struct ipv4_hdr *ip = data + (pkt->l3_off & L3_OFF_BOUND);
	if ((void *)(ip + 1) > end)
		return PARSE_MALFORMED;

	__u32 hlen = IPV4_IHL(ip->ver_ihl) * 4;
	if (hlen < sizeof(*ip) || (void *)ip + hlen > end)
		return PARSE_MALFORMED;
	__u32 tot = bpf_ntohs(ip->tot_len);
	if (tot == 0)
		pkt->l3_end = L3_END_FRAME;
	else if (tot < hlen)
		return PARSE_MALFORMED;
	else
		pkt->l3_end = pkt->l3_off + tot;
	if (!transport(ip->proto))
		return PARSE_PASS;
	pkt->proto = ip->proto;

	__u16 frag = bpf_ntohs(ip->frag_off);
	__u16 frag_units = frag & IPV4_FRAG_OFFSET;
	/* RFC 1858: a fragment at offset 8 can only serve to overwrite the
	 * first fragment's TCP flags. A UDP header is 8 bytes: nothing of it
	 * lies there. */
	if (frag_units == 1 && ip->proto == PROTO_TCP)
		return PARSE_TINY_FRAGMENT;
	/* Later fragments carry no transport header; the source check already ran. */
	if (frag_units)
		return PARSE_PASS;
	pkt->first_fragment = (frag & IPV4_MF) != 0;
	*l4_off = pkt->l3_off + hlen;
	return PARSE_OK;
}

/* ipv6_walk_ends says whether the walk of the extension headers ends at
 * nexthdr, found at off: at TCP or UDP (PARSE_OK, the upper layer at off,
 * which parse_l4 bounds), at a header that is no extension (PARSE_PASS),
 * or not there (PARSE_EXT_DEPTH: one more extension, which is one too
 * many once the walk has taken IPV6_EXT_MAX). */
static __always_inline enum parse_result ipv6_walk_ends(__u8 nexthdr, __u32 off, struct packet *pkt, __u32 *l4_off)
{
	if (transport(nexthdr)) {
		pkt->proto = nexthdr;
		*l4_off = off;
		return PARSE_OK;
	}
	if (nexthdr != NEXTHDR_HOP && nexthdr != NEXTHDR_ROUTING && nexthdr != NEXTHDR_DEST &&
	    nexthdr != NEXTHDR_AUTH && nexthdr != NEXTHDR_FRAGMENT)
		return PARSE_PASS;
	return PARSE_EXT_DEPTH;
}

/* ipv6_upper walks the extension headers that may precede TCP or UDP. Unknown
 * next-header values are an upper layer, never walked as extensions. */
static __always_inline enum parse_result ipv6_upper(void *data, void *end, struct packet *pkt, __u32 *l4_off)
{
	struct ipv6_hdr *ip6 = data + (pkt->l3_off & L3_OFF_BOUND);
	if ((void *)(ip6 + 1) > end)
		return PARSE_MALFORMED;

	__u8 nexthdr = ip6->nexthdr;
	__u32 off = pkt->l3_off + sizeof(*ip6);
	__u32 plen = bpf_ntohs(ip6->payload_len);
	pkt->l3_end = plen ? off + plen : L3_END_FRAME;

#pragma unroll
	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		enum parse_result r = ipv6_walk_ends(nexthdr, off, pkt, l4_off);
		if (r != PARSE_EXT_DEPTH)
			return r;
		if (off > MAX_HDR_OFF)
			return PARSE_EXT_DEPTH;
		struct ipv6_ext_hdr *ext = data + off;
		if ((void *)(ext + 1) > end || off + sizeof(*ext) > pkt->l3_end)
			return cut_short(pkt);

		if (nexthdr == NEXTHDR_FRAGMENT) {
			struct ipv6_frag_hdr *frag = data + off;
			if ((void *)(frag + 1) > end || off + sizeof(*frag) > pkt->l3_end)
				return cut_short(pkt);
			__u16 fo = bpf_ntohs(frag->frag_off);
			__u16 frag_units = IPV6_FRAG_UNITS(fo);
			if (frag_units == 1 && frag->nexthdr == PROTO_TCP)
				return PARSE_TINY_FRAGMENT; /* RFC 1858, as for IPv4 */
			if (frag_units)
				return PARSE_PASS; /* a later fragment */
			if (fo & IPV6_FRAG_M)
				pkt->first_fragment = 1;
			nexthdr = frag->nexthdr;
			off += sizeof(*frag);
		} else if (nexthdr == NEXTHDR_AUTH) {
			nexthdr = ext->nexthdr;
			off += ((__u32)ext->len + 2) * 4;
		} else {
			nexthdr = ext->nexthdr;
			off += ((__u32)ext->len + 1) * 8;
		}
	}
	return ipv6_walk_ends(nexthdr, off, pkt, l4_off);
}

/* parse_udp reads the UDP header, which must lie whole inside both the
 * frame and the datagram, as a TCP header must. */
static __always_inline enum parse_result parse_udp(void *data, void *end, struct packet *pkt, __u32 l4_off)
{
	struct udp_hdr *udp = data + l4_off;
	if ((void *)(udp + 1) > end || l4_off + sizeof(*udp) > pkt->l3_end)
		return cut_short(pkt);
	pkt->sport = bpf_ntohs(udp->sport);
	pkt->dport = bpf_ntohs(udp->dport);
	return PARSE_OK;
}

/* parse_l4 reads the TCP or UDP header. A TCP header must lie whole
 * (options included) inside both the frame and the datagram: a first
 * fragment too short to hold it is dropped, so flags split across fragments
 * cannot dodge the checks. */
static __always_inline enum parse_result parse_l4(void *data, void *end, struct packet *pkt)
{
	enum parse_result r;
	__u32 l4_off = 0;

	if (pkt->family == 4)
		r = ipv4_upper(data, end, pkt, &l4_off);
	else
		r = ipv6_upper(data, end, pkt, &l4_off);
	if (r != PARSE_OK)
		return r;

	if (l4_off > MAX_HDR_OFF)
		return PARSE_EXT_DEPTH;
	if (pkt->proto == PROTO_UDP)
		return parse_udp(data, end, pkt, l4_off);
	struct tcp_hdr *tcp = data + l4_off;
	if ((void *)(tcp + 1) > end || l4_off + sizeof(*tcp) > pkt->l3_end)
		return cut_short(pkt);
	__u32 hlen = TCP_DOFF(tcp->doff_res) * 4;
	if (hlen < sizeof(*tcp))
		return PARSE_MALFORMED;
	if ((void *)tcp + hlen > end || l4_off + hlen > pkt->l3_end)
		return cut_short(pkt);

	pkt->tcp_flags = tcp->flags;
	pkt->sport = bpf_ntohs(tcp->sport);
	pkt->dport = bpf_ntohs(tcp->dport);
	pkt->seq = bpf_ntohl(tcp->seq);
	return PARSE_OK;
}

#endif
