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
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60

/* VLAN tags skipped (802.1Q and 802.1ad, so QinQ fits); a deeper stack is malformed. */
#define VLAN_MAX_DEPTH 2
/* IPv6 extension headers walked before the upper layer; a longer chain is malformed. */
#define IPV6_EXT_MAX 8
/* Upper bound for header offsets, so the verifier can bound packet pointers. */
#define MAX_HDR_OFF 2048

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

enum parse_result {
	PARSE_OK,
	PARSE_PASS,      /* not for us: not IP, not TCP, or a non-first fragment */
	PARSE_MALFORMED, /* a header we need is truncated or inconsistent */
};

struct packet {
	struct addr saddr;
	struct addr daddr;
	__u32 l3_off;
	__u32 l3_end; /* end of the IP datagram as its header claims */
	__u8 family;
	__u8 tcp_flags;
	__u16 sport;
	__u16 dport;
	__u32 seq;
};

static __always_inline void map_ipv4(struct addr *a, __be32 v4)
{
	__builtin_memset(a, 0, 10);
	a->b[10] = 0xff;
	a->b[11] = 0xff;
	__builtin_memcpy(&a->b[12], &v4, 4);
}

/* parse_ip finds the IP header and reads the addresses: all the block check
 * needs. Nothing past the fixed IP header is trusted yet. */
static __always_inline enum parse_result parse_ip(void *data, void *end, struct packet *pkt)
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
	}

	pkt->l3_off = off;
	if (proto == bpf_htons(ETH_P_IPV4)) {
		struct ipv4_hdr *ip = data + off;
		if ((void *)(ip + 1) > end || (ip->ver_ihl >> 4) != 4)
			return PARSE_MALFORMED;
		pkt->family = 4;
		map_ipv4(&pkt->saddr, ip->saddr);
		map_ipv4(&pkt->daddr, ip->daddr);
		return PARSE_OK;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6_hdr *ip6 = data + off;
		if ((void *)(ip6 + 1) > end || (((__u8 *)ip6)[0] >> 4) != 6)
			return PARSE_MALFORMED;
		pkt->family = 6;
		__builtin_memcpy(&pkt->saddr, &ip6->saddr, sizeof(pkt->saddr));
		__builtin_memcpy(&pkt->daddr, &ip6->daddr, sizeof(pkt->daddr));
		return PARSE_OK;
	}
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return PARSE_MALFORMED; /* deeper than VLAN_MAX_DEPTH */
	return PARSE_PASS;
}

/* ipv4_upper finds the TCP header of an IPv4 packet parse_ip accepted. */
static __always_inline enum parse_result ipv4_upper(void *data, void *end, struct packet *pkt, __u32 *l4_off)
{
	struct ipv4_hdr *ip = data + (pkt->l3_off & 0xff);
	if ((void *)(ip + 1) > end)
		return PARSE_MALFORMED;

	__u32 hlen = (ip->ver_ihl & 0x0f) * 4;
	__u32 tot = bpf_ntohs(ip->tot_len);
	if (hlen < sizeof(*ip) || tot < hlen)
		return PARSE_MALFORMED;
	if (ip->proto != PROTO_TCP)
		return PARSE_PASS;
	/* A non-first fragment carries no TCP header; the source check already ran. */
	if (bpf_ntohs(ip->frag_off) & 0x1fff)
		return PARSE_PASS;
	*l4_off = pkt->l3_off + hlen;
	pkt->l3_end = pkt->l3_off + tot;
	return PARSE_OK;
}

/* ipv6_upper walks the extension headers that may precede TCP. Unknown
 * next-header values are an upper layer, never walked as extensions. */
static __always_inline enum parse_result ipv6_upper(void *data, void *end, struct packet *pkt, __u32 *l4_off)
{
	struct ipv6_hdr *ip6 = data + (pkt->l3_off & 0xff);
	if ((void *)(ip6 + 1) > end)
		return PARSE_MALFORMED;

	__u8 nexthdr = ip6->nexthdr;
	__u32 off = pkt->l3_off + sizeof(*ip6);
	pkt->l3_end = off + bpf_ntohs(ip6->payload_len);

#pragma unroll
	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		if (nexthdr == PROTO_TCP) {
			*l4_off = off;
			return PARSE_OK;
		}
		if (off > MAX_HDR_OFF)
			return PARSE_MALFORMED;
		struct ipv6_ext_hdr *ext = data + off;
		if ((void *)(ext + 1) > end)
			return PARSE_MALFORMED;

		switch (nexthdr) {
		case NEXTHDR_HOP:
		case NEXTHDR_ROUTING:
		case NEXTHDR_DEST:
			nexthdr = ext->nexthdr;
			off += ((__u32)ext->len + 1) * 8;
			break;
		case NEXTHDR_AUTH:
			nexthdr = ext->nexthdr;
			off += ((__u32)ext->len + 2) * 4;
			break;
		case NEXTHDR_FRAGMENT: {
			struct ipv6_frag_hdr *frag = data + off;
			if ((void *)(frag + 1) > end)
				return PARSE_MALFORMED;
			if (bpf_ntohs(frag->frag_off) & 0xfff8)
				return PARSE_PASS; /* non-first fragment */
			nexthdr = frag->nexthdr;
			off += sizeof(*frag);
			break;
		}
		default:
			return PARSE_PASS;
		}
	}
	if (nexthdr == PROTO_TCP && off <= MAX_HDR_OFF) {
		*l4_off = off;
		return PARSE_OK;
	}
	return PARSE_MALFORMED; /* longer chain than IPV6_EXT_MAX */
}

/* parse_tcp reads the TCP header. It must lie whole (options included)
 * inside both the frame and the datagram: a first fragment too short to hold
 * it is malformed, so flags split across fragments cannot dodge the checks. */
static __always_inline enum parse_result parse_tcp(void *data, void *end, struct packet *pkt)
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
		return PARSE_MALFORMED;
	struct tcp_hdr *tcp = data + l4_off;
	if ((void *)(tcp + 1) > end)
		return PARSE_MALFORMED;
	__u32 hlen = (tcp->doff_res >> 4) * 4;
	if (hlen < sizeof(*tcp) || (void *)tcp + hlen > end || l4_off + hlen > pkt->l3_end)
		return PARSE_MALFORMED;

	pkt->tcp_flags = tcp->flags;
	pkt->sport = bpf_ntohs(tcp->sport);
	pkt->dport = bpf_ntohs(tcp->dport);
	pkt->seq = bpf_ntohl(tcp->seq);
	return PARSE_OK;
}

#endif
