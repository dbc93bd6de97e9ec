/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Closed ports: whether an attempt meets a port of the host that nothing
 * serves. The daemon's side is internal/dataplane/closed.go. An attempt on
 * one of the host's own addresses is on a closed port when the port is
 * neither ignored nor forwarded (DNAT, IPVS), no socket holds it, and, for
 * UDP, it answers no connection conntrack knows; the cheap checks go
 * first.
 */
#ifndef HBF_CLOSED_H
#define HBF_CLOSED_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "parse.h"
#include "maps.h"
#include "tracker.h"

/* port_in reports whether port is in set, a bit per port (the ignored and
 * served ports of a protocol). */
static __always_inline int port_in(const __u64 *set, __u16 port)
{
	return (READ_ONCE(set[port >> 6]) >> (port & 63)) & 1;
}

/* Conntrack's lookups (kfuncs, Linux 6.0): weak, so that hbf loads where
 * they are missing, and asks only where they are there. The loader holds
 * their types to the kernel's by kind: nf_conn must be a struct, not a
 * declaration, though hbf never reads one. */
struct nf_conn {
	__u64 opaque;
};
struct bpf_ct_opts {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u8 reserved[2];
};
#define CT_DIR_REPLY 1
extern struct nf_conn *bpf_xdp_ct_lookup(struct xdp_md *ctx, struct bpf_sock_tuple *tuple, __u32 tuple_size,
					 struct bpf_ct_opts *opts, __u32 opts_size) __ksym __weak;
extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *ctx, struct bpf_sock_tuple *tuple, __u32 tuple_size,
					 struct bpf_ct_opts *opts, __u32 opts_size) __ksym __weak;
extern void bpf_ct_release(struct nf_conn *ct) __ksym __weak;
/* A weak symbol's address is 0 when the kernel lacks it (libbpf 1.2's
 * bpf_ksym_exists, which Debian 12's headers predate). */
#define ksym_exists(sym) (!!(sym))

/* answers_host reports whether conntrack holds a connection that the
 * packet answers: one the host, or its NAT (a container's masqueraded
 * query), started. Such a reply reaches no socket of the host's, and is
 * no attempt. */
static __always_inline int answers_host(void *ctx, int xdp, struct bpf_sock_tuple *t, __u32 size)
{
	struct bpf_ct_opts opts = { .netns_id = -1 /* the device's */, .l4proto = PROTO_UDP };
	struct nf_conn *ct = NULL;
	if (xdp && ksym_exists(bpf_xdp_ct_lookup))
		ct = bpf_xdp_ct_lookup(ctx, t, size, &opts, sizeof(opts));
	else if (!xdp && ksym_exists(bpf_skb_ct_lookup))
		ct = bpf_skb_ct_lookup(ctx, t, size, &opts, sizeof(opts));
	if (!ct)
		return 0;
	bpf_ct_release(ct);
	return opts.dir == CT_DIR_REPLY;
}

/* open_port_now is the open_ports clock: now_ns() in its units; now is a
 * reading an earlier step of the packet took, or 0. */
static __always_inline __u32 open_port_now(__u64 now)
{
	return (now ? now : now_ns()) >> OPEN_PORT_UNIT_SHIFT;
}

/* recently_open reports whether a server's socket held the UDP port
 * within OPEN_PORT_TTL. */
static __always_inline int recently_open(const struct packet *pkt, __u64 now)
{
	__u32 idx = port_key(pkt);
	__u32 *seen = bpf_map_lookup_elem(&open_ports, &idx);
	return seen && open_port_now(now) - *seen < OPEN_PORT_TTL;
}

static __always_inline void remember_open(const struct packet *pkt, __u64 now)
{
	__u32 idx = port_key(pkt);
	__u32 *seen = bpf_map_lookup_elem(&open_ports, &idx);
	if (seen)
		*seen = open_port_now(now);
}

/* server_socket: bound to every address, connected to none. */
static __always_inline int server_socket(struct bpf_sock *sk)
{
	return sk->dst_port == 0 && sk->src_ip4 == 0 && sk->src_ip6[0] == 0 && sk->src_ip6[1] == 0 &&
	       sk->src_ip6[2] == 0 && sk->src_ip6[3] == 0;
}

/* socket_holds reports whether the host takes the packet: a socket of the
 * receiving device's namespace (a listener or a connection for TCP, a
 * bound socket for UDP; sk_lookup programs included, as the stack would
 * run them), or for UDP a connection conntrack knows it answers. xdp says
 * which hook's ctx it is. A UDP server's port found open is taken for
 * open for OPEN_PORT_TTL more without asking: a busy DNS or QUIC server's
 * datagrams skip the lookup. */
static __always_inline int socket_holds(void *ctx, int xdp, const struct packet *pkt, __u64 now)
{
	struct bpf_sock_tuple t = {};
	__u32 size;
	if (pkt->family == 4) {
		__builtin_memcpy(&t.ipv4.saddr, &pkt->saddr.b[12], 4);
		__builtin_memcpy(&t.ipv4.daddr, &pkt->daddr.b[12], 4);
		t.ipv4.sport = bpf_htons(pkt->sport);
		t.ipv4.dport = bpf_htons(pkt->dport);
		size = sizeof(t.ipv4);
	} else {
		__builtin_memcpy(t.ipv6.saddr, &pkt->saddr, 16);
		__builtin_memcpy(t.ipv6.daddr, &pkt->daddr, 16);
		t.ipv6.sport = bpf_htons(pkt->sport);
		t.ipv6.dport = bpf_htons(pkt->dport);
		size = sizeof(t.ipv6);
	}
	if (pkt->proto != PROTO_UDP) {
		struct bpf_sock *sk = bpf_skc_lookup_tcp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return 0;
		bpf_sk_release(sk);
		return 1;
	}

	struct bpf_sock *sk = bpf_sk_lookup_udp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
	if (sk) {
		if (server_socket(sk))
			remember_open(pkt, now);
		bpf_sk_release(sk);
		return 1;
	}
	return answers_host(ctx, xdp, &t, size);
}

/* closed_port reports whether the packet tries a closed port of the host:
 * one of the host's own addresses, a port neither ignored, nor served
 * without a socket (DNAT, IPVS), nor held by a socket. The checks go
 * cheapest first; the socket lookup only where nothing else decided. now
 * is the clock as an earlier step read it for the packet, or 0. */
static __always_inline int closed_port(void *ctx, int xdp, const struct packet *pkt, const __u64 *ignored,
				       const __u64 *served, __u64 now)
{
	if (port_in(ignored, pkt->dport) || port_in(served, pkt->dport))
		return 0;
	/* A server's port is open on every address: forwarded traffic to it
	 * would not count either. */
	if (pkt->proto == PROTO_UDP && recently_open(pkt, now))
		return 0;
	if (!bpf_map_lookup_elem(&local_addrs, &pkt->daddr))
		return 0;
	return !socket_holds(ctx, xdp, pkt, now);
}

/* late_answer: a datagram from a well-known port into the host's
 * ephemeral range answers one of its own queries, late (its socket gone):
 * the second resolver's reply, a slow NTP server. */
static __always_inline int late_answer(const struct packet *pkt)
{
	return pkt->sport < 1024 && pkt->dport >= READ_ONCE(hbf_config.ephemeral_lo) &&
	       pkt->dport <= READ_ONCE(hbf_config.ephemeral_hi);
}

#endif
