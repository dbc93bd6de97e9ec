// Package dataplane loads hbf's program and talks to its BPF objects for
// the daemon: the program is one decide() built for two hooks, XDP
// (hbf_xdp) and TC ingress through TCX (hbf_tc, beside other programs),
// and Load loads the build of the hook asked for. The package attaches it
// with bpf_links, keeps the pinned layout (layout.go) and takes over an
// earlier one (migrate.go), writes and lists block and allow rules, reads
// counters and decodes the events the program sends through its ring
// buffer.
//
// It knows prefixes and times, nothing of policy: callers decide what may
// be blocked. Of hbf's packages it alone loads and talks to BPF objects:
// internal/kerneltest imports cilium/ebpf only for the errors the kernel
// answers with, which its in-memory data plane answers with too, and the
// end-to-end tests load programs of their own (foreign XDP and TCX
// programs, the softirq clock).
package dataplane
