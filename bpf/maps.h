/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The program's maps and globals: its settings, the rules, the scan
 * tracker's two tiers, the counters and the event ring. The order of the
 * globals is their layout in .data and .bss: keep it.
 */
#ifndef HBF_MAPS_H
#define HBF_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "hbf.h"
#include "common.h"

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
 * a port, a set for each protocol. Service ports clients legitimately
 * combine, like 80 and 443. */
__u64 hbf_ignored_tcp[65536 / 64];
__u64 hbf_ignored_udp[65536 / 64];

/* Ports the host serves without a socket: forwarded by DNAT (published
 * containers, NodePorts) or IPVS. The daemon reads them from the host's NAT
 * rules; they count only where every port counts (--count-ports all). */
__u64 hbf_served_tcp[65536 / 64];
__u64 hbf_served_udp[65536 / 64];

/* Added to every clock reading (now_ns). 0 but in tests, which move it
 * forward instead of sleeping through a window or an expiry. */
__u64 hbf_clock_offset = 0;

/* Exact addresses: one hash lookup is cheaper than any LPM walk. A map
 * for each family: an IPv4 key of 4 bytes instead of 16 costs a blocked
 * packet less to hash and compare, and an entry less memory. Room for a
 * million-address blocklist in each; entries cost memory only once
 * written, the bucket array (16 MiB a map) from the start. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 20);
	__type(key, struct addr4);
	__type(value, struct rule);
} blocks4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 20);
	__type(key, struct addr);
	__type(value, struct rule);
} blocks6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 18);
	__type(key, struct lpm_key);
	__type(value, struct rule);
} block_prefixes SEC(".maps");

/*
 * A filter in front of blocks4 and blocks6: one bit per hash of an
 * address (IPv4 as IPv4-mapped), set for every address they hold. A clear
 * bit says the address is not there without touching the maps, whose
 * buckets alone are 16 MiB each: a source never blocked costs one word of
 * 1 MiB instead of a cache and TLB miss into a map. A set bit only sends
 * the lookup on to the map.
 *
 * One array element holds every word: a packet looks it up once, then
 * reads its words with plain loads, where a lookup a word cost a packet
 * a tenth of its time.
 *
 * Two sides: the daemon rebuilds the idle one from the maps, then makes it
 * live, so that removed blocks stop costing a lookup. Every insertion, the
 * program's and the daemon's, sets its bit on both sides before the entry
 * goes into its map, so a live side never misses an entry. The sides'
 * words sit in pairs, word 2w of side 0 beside word 2w+1 of side 1, and
 * the top bit of each word says whether its side is live: a packet reads
 * one cache line, where a control word cost it another, cold on a quiet
 * host. The daemon makes a side live word by word before it retires the
 * other, so a pair always has a live word but for an instant, or when
 * never built: with neither live, the bit counts as set. The daemon writes
 * through mmap, with atomic operations like the program's.
 *
 * The shape is an enum, so that bpf2go carries it to the daemon's side
 * (internal/dataplane/filter.go).
 */
enum filter_layout {
	FILTER_BITS_SHIFT = 23, /* 8 Mi bits a side, 63 of every 64 used */
	FILTER_WORDS = 1 << (FILTER_BITS_SHIFT - 6), /* a side */
	FILTER_LIVE_BIT = 63,
	/* Then a bit per IPv4 /16, set where a prefix block may hold
	 * addresses: an IPv4 source outside them skips the prefix trie, where
	 * the IPv4-mapped prefix's 96 common bits make every IPv4 lookup walk
	 * deep. The daemon alone writes IPv4 prefixes (the program's are
	 * IPv6), and rewrites these words whole, atomically, after removals. */
	FILTER_V4_BASE = 2 * FILTER_WORDS,
	FILTER_V4_WORDS = 65536 / 64,
	/* Then the same for allow_prefixes: a bit per IPv4 /16; a bit per
	 * hash of an IPv6 address's first 32 bits, set by allow prefixes
	 * shorter than /64; and a bit per hash of its /64, set by the longer
	 * ones. A blocked source outside them skips the allowlist trie, which
	 * the host's own addresses and gateways always populate: with the
	 * /64s, a host's /128 no longer sends every source of its /32 there.
	 * The daemon alone writes the allowlist, and these words. */
	FILTER_ALLOW_V4_BASE = FILTER_V4_BASE + FILTER_V4_WORDS,
	FILTER_ALLOW_V6_BASE = FILTER_ALLOW_V4_BASE + FILTER_V4_WORDS,
	FILTER_ALLOW_V6_HASH_WORDS = 65536 / 64,
	FILTER_ALLOW_V6_WORDS = 2 * FILTER_ALLOW_V6_HASH_WORDS,
};
#define FILTER_LIVE (1ULL << FILTER_LIVE_BIT)
/* The hashes' multipliers (Fibonacci hashing): 64 bits wide, which clang
 * 14 truncates in an enum's BTF; TestFilterHashesAreTheProgramsOwn reads
 * them from the compiled program. */
#define FILTER_HASH64 0x9E3779B97F4A7C15ULL
#define FILTER_HASH32 0x9E3779B1U
struct filter_words {
	__u64 w[FILTER_ALLOW_V6_BASE + FILTER_ALLOW_V6_WORDS];
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct filter_words);
} block_filter SEC(".maps");

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

/* The host's own addresses, kept by the daemon: only an attempt on one of
 * them can meet a closed port. Broadcast, multicast and traffic the host
 * forwards are not here, and never count as attempts on a closed port. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* few, rarely changed: memory only for those */
	__uint(max_entries, 1 << 14);
	__type(key, struct addr);
	__type(value, __u8);
} local_addrs SEC(".maps");

/* When a server's socket last held each port: a socket bound to every
 * address of the host and connected to none, so that it holds the port
 * whatever the datagram's addresses. Indexed by port | PORT_UDP; the time
 * in units of 2^20 ns of now_ns(). A datagram to such a port within
 * OPEN_PORT_TTL units skips the socket lookup, which costs more than the
 * rest of a datagram's path. */
#define OPEN_PORT_UNIT_SHIFT 20
#define OPEN_PORT_TTL 1024 /* 1.07 s */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * 65536);
	__type(key, __u32);
	__type(value, __u32);
} open_ports SEC(".maps");

/* The last attempt each source made to each port it does not count, to
 * report a retransmitted SYN once: those ports stay out of the tracker. Losing an
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

struct scan_ports {
	__u32 ports[HBF_SCAN_SLOTS]; /* | PORT_UDP */
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

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += 1;
}

/* clock_ns is the program's clock: CLOCK_MONOTONIC plus the test offset.
 * The packet path reads it cheaply (fine 0: windows are seconds long); the
 * connection tracer, a tracepoint, may not call the coarse clock's helper,
 * and reads the same clock finely. fine must be a constant: the verifier
 * refuses the tracer a call it could reach. */
static __always_inline __u64 clock_ns(int fine)
{
	return (fine ? bpf_ktime_get_ns() : bpf_ktime_get_coarse_ns()) + hbf_clock_offset;
}

static __always_inline __u64 now_ns(void)
{
	return clock_ns(0);
}

static __always_inline int drop(__u32 reason)
{
	count(reason);
	return XDP_DROP;
}

#endif
