package dataplane

// The generated files are committed so that `go build` needs no clang;
// `make generate` rebuilds them and CI fails when they differ.
//go:generate go tool bpf2go -tags linux -type conn_event -type scan_event -type counter -type event_type -type scan_event_flags -type rule_origin -type config_flags -type port_proto -type filter_layout -type limit_event -type limit_flags -type limit_layout -type limit_stats -type datagram_log hbf ../../bpf/hbf.c

// The benchmarks' semantic reference, built into the tests only.
//go:generate go tool bpf2go -tags linux -no-global-types -output-suffix _test reference ../../bpf/testdata/reference.c

// The event generator of the reader's benchmark, built into the tests only.
//go:generate go tool bpf2go -tags linux -no-global-types -output-suffix _test eventgen ../../bpf/testdata/eventgen.c
