// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/*
 * hbf's data plane: one XDP program that decides every packet on its own.
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
#include <bpf/bpf_helpers.h>
#include "hbf.h"
#include "parse.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define EEXIST 17

/* A load the compiler may not replace with a value it already holds. */
#define READ_ONCE(x) (*(volatile typeof(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile typeof(x) *)&(x) = (v))

#define NSEC_PER_SEC 1000000000ULL

struct config hbf_config = {
	.max_ports = 3,
	.window_ms = 60 * 1000,
	.block_ns = 3600 * NSEC_PER_SEC,
	.max_blocks_per_min = 30,
	.v6_prefix_len = 64,
};

/* Scan blocks made this minute: minute << 32 | count. A scanner can spoof
 * sources (nmap -D RND:100); the budget bounds how many blocks that buys. */
__u64 hbf_block_budget = 0;

/* Set, for good, once the program itself put a prefix in block_prefixes. */
__u32 hbf_scan_prefixes = 0;

/* Set by the daemon while block_prefixes holds an entry: most hosts block
 * single addresses only, and an LPM lookup on every packet is not free. Only
 * the daemon writes that map, so the hint cannot go stale under it. */
__u32 hbf_have_block_prefixes = 0;

/* Destination ports that never count toward a scan (--ignore-ports): one bit
 * a port. Service ports clients legitimately combine, like 80 and 443. */
__u64 hbf_ignored_ports[65536 / 64];

/* Exact addresses: one hash lookup is cheaper than any LPM walk. Room for a
 * million-address blocklist; entries cost memory only once written, the
 * bucket array (16 MiB) from the start. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 20);
	__type(key, struct addr);
	__type(value, struct rule);
} blocks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 18);
	__type(key, struct lpm_key);
	__type(value, struct rule);
} block_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 14);
	__type(key, struct lpm_key);
	__type(value, struct rule);
} allow_prefixes SEC(".maps");

/* Not LRU: an LRU map could hand an entry to another source while a CPU still
 * updates it, and a flood of new sources must not evict a real scanner's
 * state. The daemon deletes idle entries. Only sources that tried two ports
 * get here (first_attempts holds the rest); room for 2^18 of them, so a
 * flood must send each spoofed source twice, and fill it for a whole
 * window, before a scanner goes untracked. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 18);
	__type(key, struct addr);
	__type(value, struct scan_state);
} scan_states SEC(".maps");

/* Number of first_attempts slots: a power of two. Under a flood of new
 * sources at R packets/s a slot is reused every 2^18/R seconds on average (a
 * quarter of a second at a million per second): a real scanner's second port
 * arrives well within that and moves it to scan_states, where nothing evicts
 * it. */
#define FIRST_ATTEMPT_SLOTS (1 << 18)

/* Slots - 1: the loader may size the table down (tests do, to empty it
 * between cases), but only to another power of two. */
const volatile __u32 hbf_first_attempt_mask = FIRST_ATTEMPT_SLOTS - 1;

/* Tier one of the tracker: each source's first attempt, in a slot chosen by
 * a keyed hash (the key is random per program, so a flood cannot aim at a
 * scanner's slot). Fixed size, preallocated: it cannot fill. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FIRST_ATTEMPT_SLOTS);
	__type(key, __u32);
	__type(value, struct first_attempt);
} first_attempts SEC(".maps");

/* The host's on-link IPv6 prefixes and fe80::/10, kept by the daemon: sources
 * in them are neighbours, tracked per address, never per prefix. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 10);
	__type(key, struct lpm_key);
	__type(value, __u8);
} onlink_prefixes SEC(".maps");

/* The last attempt each source made to each ignored port, to report a
 * retransmitted SYN once: ignored ports stay out of the tracker. Losing an
 * entry to the LRU costs at most a repeated report, never a missed one. */
struct attempt_key {
	struct addr saddr;
	__u16 sport;
	__u16 dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, struct attempt_key);
	__type(value, __u32); /* sequence number */
} ignored_attempts SEC(".maps");

/* An all-zero tracker entry to insert from: it does not fit on the stack. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scan_state);
} scan_zero SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HBF_COUNTER_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

/* Waking the reader costs ~1.5 us per event (irq_work, IPI, task wakeup),
 * several times the rest of the SYN path. Connection events therefore do not
 * wake it: it polls every few milliseconds, and is woken early once this much
 * is pending, long before the ring fills. Scan events always wake it. */
#define EVENTS_WAKEUP_BYTES (64 * 1024)

/* Make the event and enum types visible to bpf2go. */
const struct conn_event *unused_conn_event __attribute__((unused));
const struct scan_event *unused_scan_event __attribute__((unused));
const enum counter *unused_counter __attribute__((unused));
const enum event_type *unused_event_type __attribute__((unused));
const enum scan_event_flags *unused_scan_event_flags __attribute__((unused));
const enum rule_origin *unused_rule_origin __attribute__((unused));
const enum config_flags *unused_config_flags __attribute__((unused));

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += 1;
}

static __always_inline int drop(__u32 reason)
{
	count(reason);
	return XDP_DROP;
}

/* The clock is read only on paths that need it: a rule with an expiry, or an
 * attempt to track. */
static __always_inline int rule_live(const struct rule *r)
{
	return r->expires_ns == 0 || r->expires_ns > bpf_ktime_get_coarse_ns();
}

struct lpm_retry {
	struct lpm_key key;
	__u32 found;
};

static __always_inline long lpm_retry_step(void *map, struct lpm_retry *c)
{
	struct rule *r = bpf_map_lookup_elem(map, &c->key);
	if (!r)
		return 1;
	if (rule_live(r)) {
		c->found = 1;
		return 1;
	}
	__u32 shorter = r->prefixlen < c->key.prefixlen ? r->prefixlen : c->key.prefixlen;
	if (shorter == 0)
		return 1;
	c->key.prefixlen = shorter - 1;
	return 0;
}

static long block_retry_step(__u64 i, void *ctx)
{
	return lpm_retry_step(&block_prefixes, ctx);
}

static long allow_retry_step(__u64 i, void *ctx)
{
	return lpm_retry_step(&allow_prefixes, ctx);
}

/* lpm_live finds the longest live prefix holding addr. An expired hit must not
 * hide a shorter live one, so the lookup repeats with a key shorter than the
 * expired prefix (an LPM lookup matches no prefix longer than the key's).
 * That is rare, so it runs in bpf_loop, off the common path. The daemon
 * deletes expired entries. */
static __always_inline struct rule *lpm_live(void *map, void *retry_step, const struct addr *addr)
{
	struct lpm_retry c = { .key = { .prefixlen = 128, .addr = *addr } };
	struct rule *r = bpf_map_lookup_elem(map, &c.key);
	if (!r || rule_live(r))
		return r;
	if (r->prefixlen == 0)
		return NULL;
	c.key.prefixlen = (r->prefixlen < 128 ? r->prefixlen : 128) - 1;
	bpf_loop(128, retry_step, &c, 0);
	if (!c.found)
		return NULL;
	return bpf_map_lookup_elem(map, &c.key);
}

/* blocked reports whether a live block holds the address, and counts the
 * packet against it. */
__noinline int blocked(const struct addr *addr)
{
	if (!addr)
		return 0;
	struct rule *r = bpf_map_lookup_elem(&blocks, addr);
	if (r && !rule_live(r))
		r = NULL;
	if (!r && (READ_ONCE(hbf_have_block_prefixes) || READ_ONCE(hbf_scan_prefixes)))
		r = lpm_live(&block_prefixes, block_retry_step, addr);
	if (!r)
		return 0;
	__sync_fetch_and_add(&r->packets, 1);
	return 1;
}

__noinline int allowlisted(const struct addr *addr)
{
	if (!addr)
		return 0;
	return lpm_live(&allow_prefixes, allow_retry_step, addr) != NULL;
}

enum track_outcome {
	TRACK_NEW_ATTEMPT = 1, /* not a retransmission of the port's last attempt */
	TRACK_CROSSED = 2,     /* this packet took the source past max_ports */
	TRACK_FLAGGED = 4,     /* the source crossed earlier in this burst */
	TRACK_BUSY = 8,        /* the entry's lock could not be taken */
	TRACK_ALLOWED = 16,    /* past the threshold, and allowlisted */
};

struct scan_ports {
	__u16 ports[HBF_SCAN_SLOTS];
	__u32 ages_ms[HBF_SCAN_SLOTS];
	__u16 n;
};

/* Where track() copies a crossing's evidence: too big for the stack. One
 * per CPU, as an XDP program runs one packet at a time on a CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scan_ports);
} scan_evidence SEC(".maps");

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

/* slot_of is SipHash-1-3 of the 16-byte key under the program's secret key:
 * a flood that cannot predict slots cannot aim at a scanner's. */
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

/*
 * track records one attempt (SYN or stealth probe) on a port in the source's
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
			if (st->slots[i].port == pkt->dport) {
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
		__u32 move = READ_ONCE(st->move);
		for (__u32 k = 0; k < HBF_SCAN_SLOTS; k++) {
			__u32 i = move - k;
			/* barrier_var (libbpf) keeps i an index instead of a pointer
			 * the compiler walks, so each access is bounds-checked. */
			barrier_var(i);
			if (i == 0 || i >= HBF_SCAN_SLOTS)
				break;
			st->slots[i] = st->slots[i - 1];
		}
		st->slots[0].port = pkt->dport;
		st->slots[0].sport = pkt->sport;
		st->slots[0].seq = pkt->seq;
		st->slots[0].seen_ms = now32;
	}

	/* Phase 3: ports last seen longer ago than the window leave the tail. */
	{
		__u32 len = READ_ONCE(st->len);
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
	if (READ_ONCE(st->len) > READ_ONCE(hbf_config.max_ports)) {
		allowed = allowed || allowlisted(&pkt->saddr);
		int passive = allowed || (READ_ONCE(hbf_config.flags) & CONFIG_MONITOR);
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
			out->n = READ_ONCE(st->len);
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

static __always_inline int ipv4_mapped(const struct addr *a)
{
	const __u32 *w = (const __u32 *)a->b;
	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff);
}

/* tracker_key writes the unit the source is counted and blocked by, and
 * returns its prefix length: the address (128), or for an off-link IPv6
 * address its v6_prefix_len prefix. */
static __always_inline __u8 tracker_key(const struct packet *pkt, struct addr *key)
{
	*key = pkt->saddr;
	__u32 bits = READ_ONCE(hbf_config.v6_prefix_len);
	if (pkt->family != 6 || bits == 0 || bits >= 128 || ipv4_mapped(&pkt->saddr))
		return 128;
	struct lpm_key k = { .prefixlen = 128, .addr = pkt->saddr };
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
		if (mine && fa->port == pkt->dport) {
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
			fa->port = pkt->dport;
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

/* block_budget takes one block from the minute's budget; 0 when it is spent. */
static __always_inline int block_budget(__u64 now)
{
	__u32 limit = READ_ONCE(hbf_config.max_blocks_per_min);
	if (!limit)
		return 1;
	__u64 minute = now / (60 * NSEC_PER_SEC);
	for (int i = 0; i < 8; i++) {
		__u64 old = READ_ONCE(hbf_block_budget);
		__u64 next;
		if ((old >> 32) != minute)
			next = (minute << 32) | 1;
		else if ((__u32)old >= limit)
			return 0;
		else
			next = old + 1;
		if (__sync_val_compare_and_swap(&hbf_block_budget, old, next) == old)
			return 1;
	}
	return 0; /* that contended, the budget is being spent fast */
}

static __always_inline __u8 block_scanner(const struct addr *key, __u8 keylen, __u64 now,
					  __u64 *expires)
{
	if (!block_budget(now)) {
		count(COUNTER_BLOCKS_RATE_LIMITED);
		return SCAN_EV_RATE_LIMITED;
	}
	struct rule r = {
		.created_ns = now,
		.prefixlen = keylen,
		.origin = ORIGIN_SCAN,
	};
	__u64 duration = READ_ONCE(hbf_config.block_ns);
	if (duration)
		r.expires_ns = now + duration;
	*expires = r.expires_ns;

	/* A live block of this source would have dropped the packet already, so
	 * an entry already here is an expired one: replace it. */
	long err;
	if (keylen >= 128) {
		err = bpf_map_update_elem(&blocks, key, &r, BPF_ANY);
	} else {
		/* The lookup must be on before the entry can be found. */
		WRITE_ONCE(hbf_scan_prefixes, 1);
		struct lpm_key k = { .prefixlen = keylen, .addr = *key };
		err = bpf_map_update_elem(&block_prefixes, &k, &r, BPF_ANY);
	}
	if (err) {
		count(COUNTER_BLOCK_FAILURES);
		return SCAN_EV_BLOCK_FAILED;
	}
	count(COUNTER_BLOCKS_ADDED);
	return SCAN_EV_BLOCKED;
}

static __always_inline void report_scan(struct xdp_md *ctx, const struct packet *pkt, __u8 keylen,
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
	ev->ifindex = ctx->ingress_ifindex;
	ev->saddr = pkt->saddr;
	ev->daddr = pkt->daddr;
	ev->expires_ns = expires;
	__builtin_memcpy(ev->ports, ports->ports, sizeof(ev->ports));
	__builtin_memcpy(ev->ages_ms, ports->ages_ms, sizeof(ev->ages_ms));
	ev->nports = ports->n;
	ev->prefixlen = keylen;
	bpf_ringbuf_submit(ev, BPF_RB_FORCE_WAKEUP);
}

static __always_inline void report_connection(struct xdp_md *ctx, const struct packet *pkt, __u64 now)
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
	ev->ifindex = ctx->ingress_ifindex;
	ev->saddr = pkt->saddr;
	ev->daddr = pkt->daddr;
	ev->sport = pkt->sport;
	ev->dport = pkt->dport;
	__u64 wake = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= EVENTS_WAKEUP_BYTES ?
			     BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(ev, wake);
}

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

/* attempt handles a SYN (probe == 0) or a stealth probe (probe == 1) and
 * returns the verdict. allowed: the source is known to be allowlisted. */
__noinline int attempt(struct xdp_md *ctx, const struct packet *pkt, int probe, int allowed)
{
	if (!pkt)
		return XDP_PASS;

	/* Ignored ports are never counted nor a reason to block. */
	if (port_ignored(pkt->dport)) {
		if (probe)
			return drop(COUNTER_DROP_STEALTH);
		if (!ignored_retransmission(pkt))
			report_connection(ctx, pkt, bpf_ktime_get_coarse_ns());
		return XDP_PASS;
	}

	__u64 now = bpf_ktime_get_coarse_ns();
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
			report_scan(ctx, pkt, keylen, now, ports, SCAN_EV_ALLOWLISTED, 0);
		} else if (monitor) {
			count(COUNTER_SCANS_MONITORED);
			report_scan(ctx, pkt, keylen, now, ports, SCAN_EV_MONITOR, 0);
		} else {
			__u64 expires = 0;
			__u8 flags = block_scanner(&key, keylen, now, &expires);
			report_scan(ctx, pkt, keylen, now, ports, flags, expires);
			return drop(reason);
		}
	} else if ((outcome & TRACK_FLAGGED) && !allowed && !monitor) {
		return drop(reason);
	}

	if (probe)
		return drop(COUNTER_DROP_STEALTH);
	if (outcome & TRACK_NEW_ATTEMPT)
		report_connection(ctx, pkt, now);
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

static __always_inline int decide(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct packet pkt = {};
	int allowed = 0;

	count(COUNTER_PACKETS);

	enum parse_result r = parse_ip(data, end, &pkt);
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
		return attempt(ctx, &pkt, 0, allowed);
	if (!(f & (TCP_SYN | TCP_ACK | TCP_RST)) || ((f & TCP_SYN) && (f & (TCP_FIN | TCP_RST))))
		return attempt(ctx, &pkt, 1, allowed);
	return XDP_PASS;
}

SEC("xdp")
int hbf_xdp(struct xdp_md *ctx)
{
	int verdict = decide(ctx);
	/* With the drops by reason, this accounts for every packet. */
	if (verdict == XDP_PASS)
		count(COUNTER_PASSED);
	return verdict;
}
