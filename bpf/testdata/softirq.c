// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/*
 * CPU time in the network receive softirq, for the drop-cost benchmark:
 * each CPU adds up the nanoseconds between NET_RX's entry and exit, so a
 * filter's cost per dropped packet is measured to the nanosecond rather
 * than in /proc/stat's 10 ms ticks.
 */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "Dual BSD/GPL";

#define NET_RX_SOFTIRQ 3

/* The tracepoint's record, as /sys/kernel/tracing/events/irq/softirq_entry/format. */
struct softirq_record {
	__u64 common;
	__u32 vec;
};

struct net_rx_time {
	__u64 entered; /* 0: not inside NET_RX */
	__u64 ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct net_rx_time);
} net_rx SEC(".maps");

SEC("tracepoint/irq/softirq_entry")
int softirq_entry(struct softirq_record *rec)
{
	__u32 zero = 0;
	struct net_rx_time *t = bpf_map_lookup_elem(&net_rx, &zero);
	if (t && rec->vec == NET_RX_SOFTIRQ)
		t->entered = bpf_ktime_get_ns();
	return 0;
}

SEC("tracepoint/irq/softirq_exit")
int softirq_exit(struct softirq_record *rec)
{
	__u32 zero = 0;
	struct net_rx_time *t = bpf_map_lookup_elem(&net_rx, &zero);
	if (!t || rec->vec != NET_RX_SOFTIRQ || !t->entered)
		return 0;
	t->ns += bpf_ktime_get_ns() - t->entered;
	t->entered = 0;
	return 0;
}
