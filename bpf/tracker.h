/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The scan tracker: which distinct ports each source tried within the
 * window, in two tiers (first_attempts, then scan_states), updated under a
 * per-entry lock so that one source's packets on several CPUs count one after
 * the other.
 */
#ifndef HBF_TRACKER_H
#define HBF_TRACKER_H

#include "maps.h"
#include "lpm.h"
#include "parse.h"

enum track_outcome {
	TRACK_NEW_ATTEMPT = 1, /* not a retransmission of the port's last attempt */
	TRACK_CROSSED = 2,     /* this packet took the source past max_ports */
	TRACK_FLAGGED = 4,     /* the source crossed earlier in this burst */
	TRACK_BUSY = 8,        /* the entry's lock could not be taken */
	TRACK_ALLOWED = 16,    /* past the threshold, and allowlisted */
};

/* Tries to take an entry's lock before giving up: far more than an update
 * takes, since in softirq context the holder cannot be preempted. Where it can
 * (PREEMPT_RT, test runs), a packet that cannot get the lock is dropped and
 * counted, never let through uncounted. */
#define TRACKER_LOCK_SPINS 1024

/*
 * tracker_lock serialises the updates of one tracker entry. bpf_spin_lock
 * would do it, but it saves and restores interrupts around every section:
 * measured at ~56 ns per lock/unlock pair against ~5 ns for the cmpxchg and
 * xchg below (BPF_PROG_TEST_RUN, this project's reference VM), a quarter of
 * the whole SYN path. Both atomics are full barriers, so the section's plain
 * loads and stores stay inside it. What bpf_spin_lock would also enforce is
 * kept by hand: no helper call, no exit between lock and unlock.
 */
static __always_inline int tracker_lock(__u32 *lock)
{
	for (int i = 0; i < TRACKER_LOCK_SPINS; i++) {
		if (__sync_val_compare_and_swap(lock, 0, 1) == 0)
			return 1;
	}
	return 0;
}

static __always_inline void tracker_unlock(__u32 *lock)
{
	__sync_lock_test_and_set(lock, 0);
}

/* port_key is the port a packet tries, as the tracker keeps it: TCP and
 * UDP port 53 are two ports. */
static __always_inline __u32 port_key(const struct packet *pkt)
{
	return pkt->proto == PROTO_UDP ? (__u32)pkt->dport | PORT_UDP : pkt->dport;
}

static __always_inline int addr_eq(const struct addr *a, const struct addr *b)
{
	const __u64 *x = (const __u64 *)a->b, *y = (const __u64 *)b->b;
	return x[0] == y[0] && x[1] == y[1];
}

/* Another CPU may have stamped a later time than this one's clock read: a
 * negative age is "just now", not 49 days. */
static __always_inline int within(__u32 now32, __u32 seen_ms, __u32 window)
{
	__u32 age = now32 - seen_ms;
	return (__s32)age < 0 || age <= window;
}

static __always_inline __u64 rotl64(__u64 x, int b)
{
	return (x << b) | (x >> (64 - b));
}

#define SIPROUND(v0, v1, v2, v3)                                                     \
	do {                                                                         \
		v0 += v1; v1 = rotl64(v1, 13); v1 ^= v0; v0 = rotl64(v0, 32);        \
		v2 += v3; v3 = rotl64(v3, 16); v3 ^= v2;                             \
		v0 += v3; v3 = rotl64(v3, 21); v3 ^= v0;                             \
		v2 += v1; v1 = rotl64(v1, 17); v1 ^= v2; v2 = rotl64(v2, 32);        \
	} while (0)

/* slot_of is the first_attempts slot of a source: SipHash-1-3 (Aumasson and
 * Bernstein) of the 16-byte key under the program's secret key, so a flood
 * that cannot predict slots cannot aim at a scanner's. */
static __always_inline __u32 slot_of(const struct addr *key)
{
	__u64 k0 = hbf_config.hash_key[0], k1 = hbf_config.hash_key[1];
	__u64 v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
	const __u64 *m = (const __u64 *)key->b;
	__u64 last = 16ULL << 56;

	v3 ^= m[0]; SIPROUND(v0, v1, v2, v3); v0 ^= m[0];
	v3 ^= m[1]; SIPROUND(v0, v1, v2, v3); v0 ^= m[1];
	v3 ^= last; SIPROUND(v0, v1, v2, v3); v0 ^= last;
	v2 ^= 0xff;
	SIPROUND(v0, v1, v2, v3);
	SIPROUND(v0, v1, v2, v3);
	SIPROUND(v0, v1, v2, v3);
	return (__u32)(v0 ^ v1 ^ v2 ^ v3) & hbf_first_attempt_mask;
}

/* seed moves the source's first attempt from its first_attempts slot into its
 * new tracker entry, so the port counts. It goes last, as the oldest: another
 * CPU may have added its attempt to the entry first. Called under the
 * entry's lock; locks are always taken entry first, then slot. */
static __always_inline int seed(struct scan_state *st, struct first_attempt *fa,
				const struct addr *key, __u32 now32)
{
	if (!tracker_lock(&fa->lock))
		return 0;
	if (fa->used && addr_eq(&fa->key, key) && within(now32, fa->seen_ms, hbf_config.window_ms)) {
		__u32 len = st->len;
		int dup = 0;
		for (__u32 i = 0; i < HBF_SCAN_SLOTS; i++) {
			if (i >= len)
				break;
			if (st->slots[i].port == fa->port) {
				dup = 1;
				break;
			}
		}
		if (!dup && len < HBF_SCAN_SLOTS) {
			st->slots[len].port = fa->port;
			st->slots[len].sport = fa->sport;
			st->slots[len].seq = fa->seq;
			st->slots[len].seen_ms = (__s32)(now32 - fa->seen_ms) < 0 ? now32 : fa->seen_ms;
			st->len = len + 1;
		}
		fa->used = 0;
	}
	tracker_unlock(&fa->lock);
	return 1;
}

/* report_only: a crossing by this packet is reported and let be, never
 * blocked: monitor mode, or a UDP datagram with --udp-scans report. */
static __always_inline int report_only(const struct packet *pkt)
{
	__u32 flags = READ_ONCE(hbf_config.flags);
	return (flags & CONFIG_MONITOR) || (pkt->proto == PROTO_UDP && (flags & CONFIG_UDP_REPORT));
}

/*
 * track records one attempt (SYN, stealth probe, or UDP datagram) on a port in the source's
 * tracker entry, under its lock so that packets of one source handled on
 * several CPUs at once are counted one after the other: exactly one of them
 * crosses the threshold. The slots are kept most recent first, so the ports
 * still inside the window are a prefix of the list.
 *
 * Each phase hands its result to the next through the entry (len, move)
 * instead of a register: a value read back from a map is unknown to the
 * verifier, so what it learnt from one phase's branches does not multiply the
 * states it explores in the next.
 */
static __always_inline __u32 track(struct scan_state *st, const struct addr *key,
				   const struct packet *pkt, int allowed, __u64 now_ms,
				   struct scan_ports *out)
{
	__u32 now32 = (__u32)now_ms;
	__u32 outcome = TRACK_NEW_ATTEMPT;
	__u32 port = port_key(pkt);

	if (!tracker_lock(&st->lock))
		return TRACK_BUSY;

	/* The clock was read before the lock: another CPU may have stamped the
	 * entry with a later time. Time in an entry never goes backwards, or an
	 * unsigned difference would wrap and empty the window. */
	if (now_ms < st->last_ms)
		now_ms = st->last_ms;
	now32 = (__u32)now_ms;
	if (now_ms - st->last_ms > hbf_config.window_ms) {
		st->len = 0;
		st->flags &= SCAN_SEEDED;
	}
	st->last_ms = now_ms;
	/* Whichever CPU takes a new entry's lock first seeds it: attempts
	 * counted here before the first one moved in could pass the threshold
	 * by one. */
	if (!(st->flags & SCAN_SEEDED)) {
		__u32 idx = slot_of(key);
		struct first_attempt *fa = bpf_map_lookup_elem(&first_attempts, &idx);
		if (fa && !seed(st, fa, key, now32)) {
			tracker_unlock(&st->lock);
			return TRACK_BUSY;
		}
		st->flags |= SCAN_SEEDED;
	}

	/* Phase 1: find the port. A new one takes a free slot, or the least
	 * recently used. move is the slot that becomes slot 0. */
	{
		__u32 max_ports = READ_ONCE(hbf_config.max_ports);
		if (max_ports > HBF_MAX_PORTS_LIMIT)
			max_ports = HBF_MAX_PORTS_LIMIT;
		__u32 len = st->len;
		if (len > max_ports + 1)
			len = max_ports + 1;
		__u32 move = len <= max_ports ? len : max_ports;
		int found = 0;
		for (__u32 i = 0; i < HBF_SCAN_SLOTS; i++) {
			if (i >= len)
				break;
			if (st->slots[i].port == port) {
				found = 1;
				move = i;
				if (st->slots[i].sport == pkt->sport && st->slots[i].seq == pkt->seq)
					outcome = 0;
				break;
			}
		}
		if (!found && len <= max_ports)
			len++;
		st->len = len;
		st->move = move;
	}

	/* Phase 2: move to front. */
	{
		__u32 move = forget_bounds(st->move);
		for (__u32 k = 0; k < HBF_SCAN_SLOTS; k++) {
			__u32 i = move - k;
			/* barrier_var (libbpf) keeps i an index instead of a pointer
			 * the compiler walks, so each access is bounds-checked. */
			barrier_var(i);
			if (i == 0 || i >= HBF_SCAN_SLOTS)
				break;
			st->slots[i] = st->slots[i - 1];
		}
		st->slots[0].port = port;
		st->slots[0].sport = pkt->sport;
		st->slots[0].seq = pkt->seq;
		st->slots[0].seen_ms = now32;
	}

	/* Phase 3: ports last seen longer ago than the window leave the tail. */
	{
		__u32 len = forget_bounds(st->len);
		__u32 window = READ_ONCE(hbf_config.window_ms);
		__u32 live = 1;
		for (__u32 i = 1; i < HBF_SCAN_SLOTS; i++) {
			if (i >= len || now32 - st->slots[i].seen_ms > window)
				break;
			live = i + 1;
		}
		st->len = live;
	}

	/* Phase 4: the verdict. A source past the threshold crosses it once per
	 * burst as what it is now: stopped, or (allowlisted, monitor mode)
	 * reported and let be. One that loses its allowlisting mid-burst
	 * crosses again, and is stopped. */
	if (forget_bounds(st->len) > READ_ONCE(hbf_config.max_ports)) {
		allowed = allowed || allowlisted(filter_words(), &pkt->saddr, ipv4_mapped(&pkt->saddr));
		int passive = allowed || report_only(pkt);
		__u8 bit = passive ? SCAN_REPORTED : SCAN_FLAGGED;
		if (allowed)
			outcome |= TRACK_ALLOWED;
		if (st->flags & bit) {
			outcome |= TRACK_FLAGGED;
		} else {
			st->flags |= bit;
			outcome |= TRACK_CROSSED;
			/* All slots, whatever len is: n tells the reader where to stop. */
#pragma unroll
			for (__u32 i = 0; i < HBF_SCAN_SLOTS; i++) {
				out->ports[i] = st->slots[i].port;
				out->ages_ms[i] = now32 - st->slots[i].seen_ms;
			}
			out->n = forget_bounds(st->len);
		}
	}

	tracker_unlock(&st->lock);
	return outcome;
}

/* new_tracker_entry inserts the source's tracker entry, which record() just
 * looked for under the slot's lock and did not find. */
static __always_inline struct scan_state *new_tracker_entry(const struct addr *src)
{
	__u32 zero = 0;
	struct scan_state *init = bpf_map_lookup_elem(&scan_zero, &zero);
	if (!init)
		return NULL;
	long err = bpf_map_update_elem(&scan_states, src, init, BPF_NOEXIST);
	if (err && err != -EEXIST) /* another CPU may have inserted it first */
		return NULL;
	return bpf_map_lookup_elem(&scan_states, src);
}

/* source_key writes the unit a source is counted and blocked by, and
 * returns its prefix length: the address (128), or for an off-link IPv6
 * address (v6: the packet is IPv6) its v6_prefix_len prefix. Scans and
 * connection limits count the same sources. */
static __always_inline __u8 source_key(const struct addr *saddr, int v6, struct addr *key)
{
	*key = *saddr;
	__u32 bits = READ_ONCE(hbf_config.v6_prefix_len);
	/* ::/8 is never aggregated: its /64 is ::/64, which holds every
	 * IPv4-mapped address, and a scan from ::1:2:3:4 must not block all of
	 * IPv4. */
	if (!v6 || bits == 0 || bits >= 128 || saddr->b[0] == 0)
		return 128;
	struct lpm_key k = { .prefixlen = 128, .addr = *saddr };
	if (bpf_map_lookup_elem(&onlink_prefixes, &k))
		return 128;
#pragma unroll
	for (int i = 0; i < 16; i++) {
		int keep = (int)bits - i * 8;
		if (keep <= 0)
			key->b[i] = 0;
		else if (keep < 8)
			key->b[i] &= (__u8)(0xff << (8 - keep));
	}
	return bits;
}

static __always_inline __u8 tracker_key(const struct packet *pkt, struct addr *key)
{
	return source_key(&pkt->saddr, pkt->family == 6, key);
}

/*
 * record counts one attempt of the source key. A source's first attempt
 * within the window lives in its first_attempts slot; its second distinct
 * port gives it a scan_states entry (seeded with the first), where track()
 * keeps the rest. So scan_states holds only sources that tried two ports,
 * and a flood of one-SYN sources cannot fill it.
 */
__noinline __u32 record(const struct packet *pkt, const struct addr *key, __u64 now_ms,
			struct scan_ports *out, int allowed)
{
	if (!pkt || !key || !out)
		return TRACK_NEW_ATTEMPT;
	struct scan_state *st = bpf_map_lookup_elem(&scan_states, key);
	if (!st) {
		__u32 idx = slot_of(key);
		struct first_attempt *fa = bpf_map_lookup_elem(&first_attempts, &idx);
		if (!fa)
			return TRACK_NEW_ATTEMPT; /* cannot happen: idx is masked */
		if (!tracker_lock(&fa->lock))
			return TRACK_BUSY;
		__u32 now32 = (__u32)now_ms;
		int live = fa->used && within(now32, fa->seen_ms, hbf_config.window_ms);
		int mine = live && addr_eq(&fa->key, key);
		__u32 port = port_key(pkt);
		if (mine && fa->port == port) {
			/* The first port again: the slot is still the source's, so no
			 * tracker entry has taken it over. */
			__u32 outcome = TRACK_NEW_ATTEMPT;
			if (fa->sport == pkt->sport && fa->seq == pkt->seq)
				outcome = 0;
			fa->sport = pkt->sport;
			fa->seq = pkt->seq;
			fa->seen_ms = now32;
			tracker_unlock(&fa->lock);
			return outcome;
		}
		/* Another CPU may have promoted the source since the lookup: its
		 * attempts now count in the tracker entry, never in the slot. */
		st = bpf_map_lookup_elem(&scan_states, key);
		if (!st && !mine) {
			if (live)
				count(COUNTER_TRACKER_EVICTIONS);
			fa->key = *key;
			fa->port = port;
			fa->sport = pkt->sport;
			fa->seq = pkt->seq;
			fa->seen_ms = now32;
			fa->used = 1;
			tracker_unlock(&fa->lock);
			return TRACK_NEW_ATTEMPT;
		}
		tracker_unlock(&fa->lock);
		if (!st)
			st = new_tracker_entry(key);
		if (!st) {
			count(COUNTER_TRACKER_FULL);
			return TRACK_NEW_ATTEMPT;
		}
	}
	return track(st, key, pkt, allowed, now_ms, out);
}

#endif
