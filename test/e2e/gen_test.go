package e2e

// The drop-cost benchmark's clock of the receive softirq, built into the
// tests only; `make generate` rebuilds it beside the data plane's objects.
//go:generate go tool bpf2go -tags linux -type net_rx_time -output-suffix _test softirq ../../bpf/testdata/softirq.c
