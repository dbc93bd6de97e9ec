// Package testenv gates tests on what they need from the machine. A test
// that cannot run skips with the reason, except under HBF_PRIVILEGED_TESTS=1
// (what CI sets): there every test must run, so a missing need is a failure.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// Strict reports whether skipping is forbidden.
func Strict() bool { return os.Getenv("HBF_PRIVILEGED_TESTS") == "1" }

func skipOrFail(tb testing.TB, why string) {
	tb.Helper()
	if Strict() {
		tb.Fatalf("%s (HBF_PRIVILEGED_TESTS=1 forbids skipping)", why)
	}
	tb.Skipf("%s; set HBF_PRIVILEGED_TESTS=1 to make this a failure", why)
}

// RequirePrivileged needs root: BPF programs, XDP, network namespaces.
func RequirePrivileged(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(tb, "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)")
	}
}

// RequireCommand needs a program on PATH and returns its path.
func RequireCommand(tb testing.TB, name string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		skipOrFail(tb, "needs "+name+" on PATH (make deps installs it)")
	}
	return path
}
