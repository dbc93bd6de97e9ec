// Package dataplane loads hbf's XDP program and is the only package that
// talks to the kernel's BPF objects: it attaches the program, pins and adopts
// its maps, writes and lists block and allow rules, reads counters and
// decodes the events the program sends through its ring buffer.
//
// It knows prefixes and times, nothing of policy: callers decide what may be
// blocked.
package dataplane
