/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection limits: at most count connections from one source to one
 * local port in any window.
 *
 * TCP counts completed handshakes, seen by the connection tracer (the
 * inet_sock_set_state raw tracepoint, SYN_RECV -> ESTABLISHED): a forger
 * who cannot answer the SYN-ACK completes none, so forged SYNs neither
 * count nor create state, and cannot evict or reset a real source's log.
 * Over the limit, the tracer blocks the source in the kernel at once (the
 * XDP program drops its next packet), or with :drop the XDP program drops
 * the source's SYNs to the port while its log is full.
 *
 * UDP counts datagrams in the XDP program. A datagram can be forged, so a
 * UDP limit only drops that source's datagrams to the port, never blocks;
 * its logs live in a map of their own, which a forged flood may churn but
 * which holds no TCP source's log.
 */
#ifndef HBF_LIMIT_H
#define HBF_LIMIT_H

#include <bpf/bpf_core_read.h>
#include "maps.h"
#include "lpm.h"
#include "budget.h"
#include "tracker.h"

/* The ports with a limit, a bit a port: a SYN or a datagram to another
 * port pays one load. The daemon writes the limit before its bit, and
 * clears the bit before it removes the limit. */
__u64 hbf_limited_tcp[65536 / 64];
__u64 hbf_limited_udp[65536 / 64];

/* Indexed by port | PORT_UDP: an array, whose lookup costs a datagram a
 * load where a hash's cost it a hash. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * 65536);
	__type(key, __u32);
	__type(value, struct limit_rule);
} limits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HBF_LIMIT_SLOTS);
	__type(key, __u32);
	__type(value, struct limit_stats);
} limit_counters SEC(".maps");

/* TCP sources' logs. An LRU: a full table reuses the least recently
 * touched log, and only completed handshakes touch it. */
#define CONN_LOGS (1 << 15)
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CONN_LOGS);
	__type(key, struct limit_key);
	__type(value, struct conn_log);
} conn_logs SEC(".maps");

/* UDP sources' logs: one slot a hash of the source and port, taken over
 * by another source that hashes there. A forger can throttle any source
 * outright, so the hash needs no secret; it is a multiply, where a keyed
 * hash or an LRU lookup cost a datagram more than the rest of its path. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << DATAGRAM_LOG_BITS);
	__type(key, __u32);
	__type(value, struct datagram_log);
} datagram_logs SEC(".maps");

/* An empty log to insert from: it would take half the stack. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct conn_log);
} conn_log_zero SEC(".maps");

#define LOG_WRITTEN (1ULL << 63)
#define LOG_INDEX_SHIFT 44
#define LOG_INDEX_MASK ((1U << 19) - 1)
#define LOG_TIME_MASK ((1ULL << LOG_INDEX_SHIFT) - 1)

/* log_age is how long before now_ms the logged time v was; 0 for a time
 * after now_ms (the coarse clock lags the tracer's fine one). */
static __always_inline __u64 log_age(__u64 v, __u64 now_ms)
{
	__u64 t = v & LOG_TIME_MASK;
	return t > now_ms ? 0 : now_ms - t;
}

/* log_full reports whether the log holds count connections within the
 * window: the next one would be over. It only reads. */
static __always_inline int log_full(struct conn_log *log, const struct limit_rule *l, __u64 now_ms)
{
	__u32 count = READ_ONCE(l->count);
	__u32 n = READ_ONCE(log->n);
	if (count == 0 || n < count)
		return 0;
	__u32 slot = n % count; /* connection n - count's, the oldest of the last count */
	if (slot >= HBF_LIMIT_MAX_COUNT)
		return 0;
	__u64 v = READ_ONCE(log->t[slot]);
	if (!(v & LOG_WRITTEN))
		return 1; /* being logged this instant */
	return log_age(v, now_ms) < READ_ONCE(l->window_ms);
}

/*
 * log_add logs a connection at now_ms and reports whether it is over the
 * limit: whether the count-th connection before it is within the window.
 * Exact when connections of one source are logged on several CPUs at
 * once: each takes its own index, and finds in its slot either connection
 * index - count, whose time decides, or a connection another CPU is
 * logging this instant (an older one not yet replaced, or a later one
 * that came first), which is within the window by being now.
 */
static __always_inline int log_add(struct conn_log *log, const struct limit_rule *l, __u64 now_ms)
{
	__u32 count = READ_ONCE(l->count);
	if (count == 0)
		return 0;
	__u32 k = __sync_fetch_and_add(&log->n, 1);
	__u32 slot = k % count;
	if (slot >= HBF_LIMIT_MAX_COUNT)
		return 0;
	__u64 mine = LOG_WRITTEN | ((__u64)(k & LOG_INDEX_MASK) << LOG_INDEX_SHIFT) | (now_ms & LOG_TIME_MASK);
	__u64 old = __sync_lock_test_and_set(&log->t[slot], mine);
	if (k < count)
		return 0;
	if (!(old & LOG_WRITTEN) || ((old >> LOG_INDEX_SHIFT) & LOG_INDEX_MASK) != ((k - count) & LOG_INDEX_MASK))
		return 1;
	return log_age(old, now_ms) < READ_ONCE(l->window_ms);
}

/* log_of is the log of key in map, made empty if it has none; NULL when
 * the map could not take it. */
static __always_inline struct conn_log *log_of(void *map, const struct limit_key *key)
{
	struct conn_log *log = bpf_map_lookup_elem(map, key);
	if (log)
		return log;
	__u32 zero = 0;
	struct conn_log *empty = bpf_map_lookup_elem(&conn_log_zero, &zero);
	if (!empty)
		return NULL; /* cannot happen: a one-entry array */
	/* NOEXIST: a CPU that logs the same new source meanwhile keeps its entry. */
	bpf_map_update_elem(map, key, empty, BPF_NOEXIST);
	log = bpf_map_lookup_elem(map, key);
	if (!log)
		count(COUNTER_LIMIT_UNLOGGED);
	return log;
}

/* first_report reports whether this is the first time a log's burst
 * over the limit is reported; reported is the log's flag. */
static __always_inline int first_report(__u32 *reported)
{
	return READ_ONCE(*reported) == 0 && __sync_lock_test_and_set(reported, 1) == 0;
}

/* under_limit notes that a log's source is under its limit again
 * (reported is the log's flag): its next burst is reported. */
static __always_inline void under_limit(__u32 *reported)
{
	if (READ_ONCE(*reported))
		WRITE_ONCE(*reported, 0);
}

static __always_inline void report_limit(const struct limit_key *key, __u8 keylen, const struct addr *saddr,
					 const struct addr *daddr, __u8 family, __u16 sport,
					 const struct limit_rule *l, __u64 now, __u8 flags, __u64 expires)
{
	struct limit_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count(COUNTER_EVENTS_LOST);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->time_ns = now;
	ev->type = EVENT_LIMIT;
	ev->family = family;
	ev->flags = flags;
	ev->prefixlen = keylen;
	ev->port = key->port;
	ev->saddr = *saddr;
	ev->daddr = *daddr;
	ev->expires_ns = expires;
	ev->count = READ_ONCE(l->count);
	ev->window_ms = READ_ONCE(l->window_ms);
	ev->sport = sport;
	bpf_ringbuf_submit(ev, BPF_RB_FORCE_WAKEUP);
}

/* stats_of is the limit's statistics on this CPU; NULL cannot happen. */
static __always_inline struct limit_stats *stats_of(const struct limit_rule *l)
{
	__u32 slot = READ_ONCE(l->slot);
	return bpf_map_lookup_elem(&limit_counters, &slot);
}

/* datagram_log is key's log, taken over when another source's is there. */
static __always_inline struct datagram_log *datagram_log(const struct limit_key *key)
{
	const __u64 *w = (const __u64 *)key->src.b;
	__u32 i = ((w[0] ^ w[1] ^ key->port) * FILTER_HASH64) >> (64 - DATAGRAM_LOG_BITS);
	struct datagram_log *log = bpf_map_lookup_elem(&datagram_logs, &i);
	if (!log)
		return NULL;
	const __u64 *have = (const __u64 *)log->key.src.b;
	if (have[0] != w[0] || have[1] != w[1] || log->key.port != key->port) {
		log->key = *key;
		log->filled = 0;
		log->next = 0;
		log->reported = 0;
	}
	return log;
}

/* datagram_over reports whether a datagram at now_ms is over the limit,
 * and logs it when it is not. */
static __always_inline int datagram_over(struct datagram_log *log, const struct limit_rule *l, __u64 now_ms)
{
	__u32 count = READ_ONCE(l->count), next = log->next, filled = log->filled;
	if (next >= count || next >= HBF_LIMIT_MAX_COUNT)
		next = 0; /* the count changed */
	if (filled >= count && log_age(log->t[next], now_ms) < READ_ONCE(l->window_ms))
		return 1;
	log->t[next] = now_ms;
	log->next = next + 1 < count ? next + 1 : 0;
	if (filled < count)
		log->filled = filled + 1;
	under_limit(&log->reported);
	return 0;
}

/* throttled decides a SYN or a datagram (pkt) to a port with a limit,
 * in the XDP program: whether to drop it. A SYN only reads its source's
 * log (a forged SYN leaves nothing); a datagram that passes is logged.
 * allowed: the source is known to be allowlisted; now: the clock, as the
 * caller read it for a datagram's later steps too (a SYN reads the
 * tracer's). A function the verifier checks once, for both callers. */
__noinline int throttled(const struct packet *pkt, int udp, int allowed, __u64 now)
{
	if (!pkt)
		return 0;
	struct limit_key key = { .port = pkt->dport | (udp ? PORT_UDP : 0) };
	struct limit_rule *l = bpf_map_lookup_elem(&limits, &key.port);
	if (!l || !READ_ONCE(l->count) || !(READ_ONCE(l->flags) & LIMIT_DROP))
		return 0;
	struct limit_stats *st = stats_of(l);
	if (!st)
		return 0;
	__u8 keylen = source_key(&pkt->saddr, pkt->family == 6, &key.src);
	__u32 *reported;
	if (udp) {
		struct datagram_log *log = datagram_log(&key);
		if (!log)
			return 0;
		st->counted++;
		if (!datagram_over(log, l, now / 1000000))
			return 0;
		reported = &log->reported;
	} else {
		struct conn_log *log = bpf_map_lookup_elem(&conn_logs, &key);
		if (!log)
			return 0;
		/* A TCP log is on the tracer's fine clock, which the coarse one
		 * lags by up to a tick. */
		now = clock_ns(1);
		if (!log_full(log, l, now / 1000000)) {
			under_limit(&log->reported);
			return 0;
		}
		reported = &log->reported;
	}
	st->exceeded++;
	count(COUNTER_LIMITS_EXCEEDED);
	__u8 flags = SCAN_EV_THROTTLED;
	if (allowed || allowlisted(filter_words(), &pkt->saddr, pkt->family == 4 || ipv4_mapped(&pkt->saddr)))
		flags = SCAN_EV_ALLOWLISTED;
	else if (READ_ONCE(hbf_config.flags) & CONFIG_MONITOR)
		flags = SCAN_EV_MONITOR;
	if (first_report(reported))
		report_limit(&key, keylen, &pkt->saddr, &pkt->daddr, pkt->family, pkt->sport, l, now, flags, 0);
	if (flags != SCAN_EV_THROTTLED)
		return 0;
	st->dropped++;
	return 1;
}

/* The kernel's types, as far as the tracer reads them: CO-RE finds their
 * fields in the running kernel's BTF, whatever their layout there. */
struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct in6_addr {
	__u8 b[16];
};

struct sock_common {
	__be32 skc_daddr;     /* the peer's IPv4 address */
	__be32 skc_rcv_saddr; /* the local one */
	__be16 skc_dport;     /* the peer's port */
	__u16 skc_num;        /* the local port */
	unsigned short skc_family;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol; /* a bitfield before Linux 5.6: read with BPF_CORE_READ_BITFIELD_PROBED */
} __attribute__((preserve_access_index));

#define TCP_ESTABLISHED 1
#define TCP_SYN_RECV 3
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

/* conn_over handles a connection over its limit: block the source, or
 * report why not. */
static __always_inline void conn_over(const struct limit_key *key, __u8 keylen, const struct addr *saddr,
				      const struct addr *daddr, __u8 family, __u16 sport,
				      struct limit_rule *l, struct conn_log *log, __u64 now)
{
	struct limit_stats *st = stats_of(l);
	if (!st)
		return;
	st->exceeded++;
	count(COUNTER_LIMITS_EXCEEDED);
	if (READ_ONCE(l->flags) & LIMIT_DROP)
		return; /* the XDP program drops its next SYNs, and reports them */
	__u8 flags = 0;
	__u64 expires = 0;
	if (allowlisted_fine(filter_words(), saddr, ipv4_mapped(saddr)))
		flags = SCAN_EV_ALLOWLISTED;
	else if (READ_ONCE(hbf_config.flags) & CONFIG_MONITOR)
		flags = SCAN_EV_MONITOR;
	else
		flags = block_source(&key->src, keylen, now, ORIGIN_LIMIT, &expires);
	if (flags == SCAN_EV_BLOCKED)
		st->blocked++;
	/* A block is reported each time it is made; what leaves the source
	 * free, once a burst. */
	if (flags == SCAN_EV_BLOCKED || first_report(&log->reported))
		report_limit(key, keylen, saddr, daddr, family, sport, l, now, flags, expires);
}

/* hbf_conn_tracer counts every connection a client completes to a port
 * with a limit, in the network namespace of the interfaces hbf filters:
 * a socket going from SYN_RECV to ESTABLISHED. A raw tracepoint of
 * inet_sock_set_state(sk, oldstate, newstate): unlike the tracepoint, it
 * needs no tracefs mounted, and the kernel builds no trace record. */
SEC("raw_tracepoint/inet_sock_set_state")
int hbf_conn_tracer(struct bpf_raw_tracepoint_args *ctx)
{
	if (ctx->args[1] != TCP_SYN_RECV || ctx->args[2] != TCP_ESTABLISHED)
		return 0;
	const struct sock *sk = (const struct sock *)ctx->args[0];
	/* MPTCP's connection sockets go through these states too, beside
	 * their TCP subflows: each connection counts once, as TCP. */
	if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	__u16 port = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (!port_in(hbf_limited_tcp, port))
		return 0;
	if (BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) != READ_ONCE(hbf_config.netns_inum))
		return 0;
	struct limit_key key = { .port = port };
	struct limit_rule *l = bpf_map_lookup_elem(&limits, &key.port);
	if (!l || !READ_ONCE(l->count))
		return 0;
	struct limit_stats *st = stats_of(l);
	if (!st)
		return 0;

	struct addr saddr = {}, daddr = {}; /* the client's, and the host's */
	int v6 = BPF_CORE_READ(sk, __sk_common.skc_family) == AF_INET6;
	if (v6) {
		BPF_CORE_READ_INTO(&saddr, sk, __sk_common.skc_v6_daddr);
		BPF_CORE_READ_INTO(&daddr, sk, __sk_common.skc_v6_rcv_saddr);
	} else {
		map_ipv4(&saddr, BPF_CORE_READ(sk, __sk_common.skc_daddr));
		map_ipv4(&daddr, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
	}
	__u8 family = ipv4_mapped(&saddr) ? 4 : 6;
	__u8 keylen = source_key(&saddr, v6, &key.src);
	struct conn_log *log = log_of(&conn_logs, &key);
	if (!log)
		return 0;
	st->counted++;
	__u64 now = clock_ns(1);
	if (log_add(log, l, now / 1000000))
		conn_over(&key, keylen, &saddr, &daddr, family, bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport)),
			  l, log, now);
	else
		under_limit(&log->reported);
	return 0;
}

#endif
