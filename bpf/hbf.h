/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The ABI between the XDP program and the Go control plane: every struct and
 * enum here is turned into a Go type by bpf2go (-type), never copied by hand.
 * Changing a map's key or value layout changes the pinned-map layout version.
 */
#ifndef HBF_H
#define HBF_H

#include <linux/types.h>

/* --max-ports is at most this; the tracker keeps one more slot than the
 * threshold, which is exactly what "more than N distinct ports" needs. */
#define HBF_MAX_PORTS_LIMIT 32
#define HBF_SCAN_SLOTS (HBF_MAX_PORTS_LIMIT + 1)

/* Addresses are 16 bytes everywhere; IPv4 is stored IPv4-mapped
 * (::ffff:a.b.c.d), so an IPv6 packet from ::ffff:a.b.c.d and an IPv4 packet
 * from a.b.c.d share block, allow and scan state. */
struct addr {
	__u8 b[16];
};

/* An IPv4 address, in network order: the key of blocks4, where a 4-byte
 * key hashes and compares in a quarter of the work of a mapped one. */
struct addr4 {
	__u8 b[4];
};

/* LPM key; prefixlen counts bits of the 16-byte (mapped) address. */
struct lpm_key {
	__u32 prefixlen;
	struct addr addr;
};

enum rule_origin {
	ORIGIN_OPERATOR = 0, /* written by the daemon: CLI, files, flags */
	ORIGIN_SCAN = 1,     /* written by the XDP program when a scan crossed the threshold */
	ORIGIN_LIMIT = 2,    /* written by the connection tracer: a source over a connection limit */
};

/* Value of the block and allow maps. Times are CLOCK_MONOTONIC ns, the clock
 * of bpf_ktime_get_coarse_ns() (now_ns() in maps.h). */
struct rule {
	__u64 expires_ns; /* 0: never */
	__u64 created_ns;
	__u64 packets;    /* packets dropped by this block (allow rules: unused) */
	__u8 prefixlen;   /* the key's prefix length, so an expired LPM hit can look again shorter */
	__u8 origin;      /* enum rule_origin */
	__u8 _pad[6];
};

enum config_flags {
	CONFIG_MONITOR = 1,      /* report scans as "would block"; block and drop nothing for them */
	CONFIG_UDP_OFF = 2,      /* UDP datagrams never count (--udp-scans off) */
	CONFIG_UDP_REPORT = 4,   /* a scan UDP takes past the threshold is reported, never blocked */
	CONFIG_COUNT_CLOSED = 8, /* a SYN counts only on a closed port (--count-ports closed) */
};

/* Runtime settings; a global the daemon rewrites without reloading. */
struct config {
	__u32 max_ports;  /* N: more than N distinct ports within the window is a scan */
	__u32 window_ms;
	__u64 block_ns;   /* duration of a scan block; 0: never expires */
	__u32 flags;      /* enum config_flags */
	__u32 max_blocks_per_min; /* scan blocks the program may make in a minute; 0: no limit */
	__u64 hash_key[2];        /* secret key of the first-attempt table's hash */
	__u8 v6_prefix_len;       /* off-link IPv6 sources are tracked and blocked per prefix of
				   * this length; 128: per address */
	__u8 _pad;
	/* The host's ephemeral ports (ip_local_port_range): a datagram from a
	 * well-known port into them is a late answer, never an attempt. */
	__u16 ephemeral_lo;
	__u16 ephemeral_hi;
	__u8 _pad2[2];
	/* The network namespace (its inode number) whose connections the
	 * limits count: the daemon's, where the interfaces it filters are. */
	__u32 netns_inum;
	__u32 _pad3;
};

/* A tracked port is the destination port, | PORT_UDP for UDP: TCP and UDP
 * port 53 are two ports. */
enum port_proto {
	PORT_UDP = 0x10000,
};

struct port_slot {
	__u32 port;  /* destination port, | PORT_UDP */
	__u16 sport; /* source port and sequence number of the last attempt, */
	__u16 _pad;
	__u32 seen_ms;
	__u32 seq;   /* to tell a retransmitted SYN from a new connection */
};

enum scan_flags {
	SCAN_FLAGGED = 1,  /* crossed the threshold in the current burst, and was stopped */
	SCAN_SEEDED = 2,   /* the source's first attempt was moved in from first_attempts */
	SCAN_REPORTED = 4, /* crossed while allowlisted or in monitor mode: reported, let be */
};

/* A source's first attempt within the window. Sources get a tracker entry
 * only with their second distinct port, so a flood of one-SYN sources (the
 * usual spoofed flood) churns this fixed table and never fills the tracker
 * a real scanner needs. */
struct first_attempt {
	__u32 lock;   /* as scan_state's */
	__u32 seen_ms;
	struct addr key; /* the tracked source (an address, or an IPv6 prefix) */
	__u32 port;      /* | PORT_UDP, as in port_slot */
	__u16 sport;
	__u16 _pad;
	__u32 seq;
	__u32 used;
};

/* Per-source tracker entry: the most recently used distinct destination
 * ports, most recent first. */
struct scan_state {
	__u32 lock; /* 1 while a CPU updates the entry; see tracker_lock() */
	__u8 len;   /* slots in use */
	__u8 move;  /* scratch for track(), under the lock */
	__u8 flags;
	__u8 _pad;
	__u64 last_ms;
	struct port_slot slots[HBF_SCAN_SLOTS];
};

enum event_type {
	EVENT_CONNECTION = 1,
	EVENT_SCAN = 2,
	EVENT_LIMIT = 3,
};

struct conn_event {
	__u64 time_ns;
	__u8 type;   /* EVENT_CONNECTION */
	__u8 family; /* 4 or 6: the packet's IP version */
	__u16 _pad;
	__u32 ifindex;
	struct addr saddr;
	struct addr daddr;
	__u16 sport;
	__u16 dport;
	__u32 _pad2;
};

enum scan_event_flags {
	SCAN_EV_ALLOWLISTED = 1,  /* reported, not blocked */
	SCAN_EV_BLOCKED = 2,      /* the program inserted a block */
	SCAN_EV_BLOCK_FAILED = 4, /* the block map refused the entry (full) */
	SCAN_EV_MONITOR = 8,      /* monitor mode: would have been blocked */
	SCAN_EV_RATE_LIMITED = 16, /* not blocked: the minute's budget of scan blocks is spent */
	SCAN_EV_REPORT_ONLY = 32,  /* a UDP datagram crossed with --udp-scans report: reported, not blocked */
	SCAN_EV_THROTTLED = 64,    /* a limit's :drop (every UDP limit): the source's packets to the port are dropped, it is not blocked */
};

/*
 * Connection limits: at most count connections (TCP: completed handshakes;
 * UDP: datagrams) from one source to one local port in any window.
 */

/* A limit's count is at most this: the kernel keeps the times of a
 * source's last HBF_LIMIT_MAX_COUNT connections to a port. */
#define HBF_LIMIT_MAX_COUNT 64

/* Ports with a limit at once, at most: the entries of limit_counters. */
#define HBF_LIMIT_SLOTS 1024

enum limit_layout { /* for the daemon, through bpf2go */
	LIMIT_MAX_COUNT = HBF_LIMIT_MAX_COUNT,
	LIMIT_SLOTS = HBF_LIMIT_SLOTS,
	DATAGRAM_LOG_BITS = 13,
};

enum limit_flags {
	LIMIT_DROP = 1, /* over the limit: drop the source's SYNs (datagrams) to the port; never block */
};

/* Value of the limits map, indexed by port | PORT_UDP. */
struct limit_rule {
	__u32 count; /* 0: the port has no limit */
	__u32 window_ms;
	__u32 flags; /* enum limit_flags */
	__u32 slot;  /* its entry in limit_counters */
};

/* What a limit did: per CPU, summed by the daemon. */
struct limit_stats {
	__u64 counted;  /* connections (datagrams) counted */
	__u64 exceeded; /* connections over the limit: a burst's first and every later one */
	__u64 blocked;  /* sources it blocked */
	__u64 dropped;  /* SYNs and datagrams it dropped (:drop) */
};

struct limit_key {
	struct addr src; /* the source: an address, or an off-link IPv6 source's prefix */
	__u32 port;      /* | PORT_UDP */
};

/* A source's last connections to a port, a sliding log: slot i % count
 * holds connection i's time, written as LOG_WRITTEN | i << LOG_INDEX_SHIFT
 * | ms, so that a CPU can tell the connection it replaces from one another
 * CPU is logging at that moment. */
struct conn_log {
	__u32 n;        /* connections logged: the next one's index */
	__u32 reported; /* 1 once this burst over the limit was reported */
	__u64 t[HBF_LIMIT_MAX_COUNT];
};

/* A source's last datagrams to a port, their times in ms in a ring of
 * count slots (a division a datagram would cost a tenth of its path).
 * Written without atomics: a UDP limit only throttles, and
 * two CPUs racing on one source's datagrams may let one more through. */
struct datagram_log {
	struct limit_key key; /* whose log it is: another source's replaces it */
	__u32 filled;         /* slots written, up to the count */
	__u32 next;           /* the slot of the next datagram: the oldest once filled */
	__u32 reported;
	__u64 t[HBF_LIMIT_MAX_COUNT];
};

struct limit_event {
	__u64 time_ns;
	__u8 type;      /* EVENT_LIMIT */
	__u8 family;
	__u8 flags;     /* enum scan_event_flags */
	__u8 prefixlen; /* of the counted (and blocked) source */
	__u32 port;     /* | PORT_UDP */
	struct addr saddr;
	struct addr daddr;
	__u64 expires_ns; /* of the block; 0: permanent */
	__u32 count;      /* the limit's */
	__u32 window_ms;
	__u16 sport;
	__u8 _pad[6];
};

struct scan_event {
	__u64 time_ns;
	__u8 type;   /* EVENT_SCAN */
	__u8 family;
	__u8 flags;  /* enum scan_event_flags */
	__u8 nports;
	__u32 ifindex;
	struct addr saddr;
	struct addr daddr;
	__u64 expires_ns; /* of the block; 0: permanent */
	__u32 ports[HBF_SCAN_SLOTS]; /* | PORT_UDP */
	__u8 prefixlen;   /* of the tracked (and blocked) source: 128, or the IPv6 scan prefix */
	__u8 _pad0[3];
	/* When each port was last tried: ms before time_ns. */
	__u32 ages_ms[HBF_SCAN_SLOTS];
	__u32 _pad2;
};

/* Indexes of the per-CPU counters array. */
enum counter {
	COUNTER_PACKETS = 0,        /* kept for the slots' order; the daemon adds passed and drops */
	COUNTER_DROP_BLOCKED,
	COUNTER_DROP_STEALTH,
	COUNTER_DROP_SCAN,
	COUNTER_DROP_MALFORMED,
	COUNTER_NEW_CONNECTIONS,
	COUNTER_SCANS_DETECTED,
	COUNTER_SCANS_ALLOWLISTED,  /* of which from allowlisted sources */
	COUNTER_ALLOWLIST_OVERRIDES, /* packets of a blocked source passed because allowlisted */
	COUNTER_BLOCKS_ADDED,        /* blocks the program inserted for scanners */
	COUNTER_BLOCK_FAILURES,      /* block map full */
	COUNTER_EVENTS_LOST,         /* ring buffer full */
	COUNTER_TRACKER_FULL,        /* a new source could not be tracked */
	COUNTER_DROP_TRACKER_BUSY,   /* dropped: its tracker entry stayed locked too long */
	COUNTER_SCANS_MONITORED,     /* scans let through in monitor mode */
	COUNTER_DROP_VLAN_DEPTH,     /* more VLAN tags than the parser skips */
	COUNTER_DROP_EXT_DEPTH,      /* more IPv6 extension headers than the parser walks */
	COUNTER_DROP_TINY_FRAGMENT,  /* TCP header not whole in the first fragment, or overlapped */
	COUNTER_PASSED,              /* every packet passed: with the drops, every packet seen */
	COUNTER_BLOCKS_RATE_LIMITED, /* scanners not blocked: the minute's budget was spent */
	COUNTER_TRACKER_EVICTIONS,   /* first attempts of live sources overwritten by others */
	COUNTER_UDP_ATTEMPTS,        /* UDP datagrams counted: to a closed port of the host */
	COUNTER_UDP_SCANS_DETECTED,  /* scans a UDP datagram took past the threshold */
	COUNTER_SYNS_UNCOUNTED,      /* SYNs not counted: an open, forwarded or ignored port */
	COUNTER_DROP_LIMIT,          /* SYNs and datagrams a connection limit's :drop dropped */
	COUNTER_LIMITS_EXCEEDED,     /* connections (datagrams) over a limit */
	COUNTER_LIMIT_UNLOGGED,      /* connections not counted: the log map could not take the source */
	COUNTER_LIMIT_BLOCKS,        /* blocks the connection tracer inserted */
	COUNTER_MAX,
};

/* Size of the counters map: room to add counters without changing the
 * pinned map's layout. */
#define HBF_COUNTER_SLOTS 64
_Static_assert(COUNTER_MAX <= HBF_COUNTER_SLOTS, "counters map too small");

#endif
