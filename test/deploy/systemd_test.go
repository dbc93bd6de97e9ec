// Package deploy checks the deployment files under deploy/: the systemd
// unit, the Kubernetes manifests, the Prometheus rules, the packages.
package deploy

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/testenv"
)

// unitSettings reads a systemd unit's Key=Value lines; repeated keys keep
// every value, in order.
func unitSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s: cannot read %q", path, l)
		}
		out[k] = append(out[k], v)
	}
	return out
}

// buildHBF builds the binary into a temporary folder.
func buildHBF(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hbf")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "../../cmd/hbf")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build hbf: %v\n%s", err, out)
	}
	return bin
}

const unitPath = "../../deploy/systemd/hbf.service"

// systemd-analyze verify finds nothing to say (it checks the executable
// exists, so the unit's ExecStart points at a fresh build here).
func TestSystemdUnitVerifies(t *testing.T) {
	testenv.RequireCommand(t, "systemd-analyze")
	b, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.ReplaceAll(string(b), "ExecStart=/usr/bin/hbf", "ExecStart="+buildHBF(t))
	path := filepath.Join(t.TempDir(), "hbf.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// syscallGroups reads every @group of systemd-analyze syscall-filter.
func syscallGroups(t *testing.T) map[string][]string {
	t.Helper()
	out, err := exec.Command("systemd-analyze", "syscall-filter").Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter: %v", err)
	}
	groups := map[string][]string{}
	var cur string
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(l, "@"):
			cur = strings.TrimSpace(l)
		case strings.HasPrefix(l, "    ") && cur != "":
			if name := strings.TrimSpace(l); name != "" && name[0] != '#' {
				groups[cur] = append(groups[cur], name)
			}
		}
	}
	return groups
}

func expand(groups map[string][]string, names []string, into map[string]bool) {
	for _, n := range names {
		if strings.HasPrefix(n, "@") {
			expand(groups, groups[n], into)
		} else {
			into[n] = true
		}
	}
}

// What verify cannot tell: that the hardening leaves hbf what it needs.
// bpf() is in @privileged, not @system-service, so the filter must name it;
// /sys/fs/bpf must stay writable under ProtectSystem=strict and
// ProtectKernelTunables; the capabilities are the measured minimum, the
// same as the container's; the folders are the daemon's defaults.
func TestSystemdUnitLetsHBFWork(t *testing.T) {
	testenv.RequireCommand(t, "systemd-analyze")
	u := unitSettings(t, unitPath)
	groups := syscallGroups(t)
	service := map[string]bool{}
	expand(groups, []string{"@system-service"}, service)
	if service["bpf"] {
		t.Log("bpf() is in @system-service on this systemd; the unit names it all the same")
	}
	allowed, denied := map[string]bool{}, map[string]bool{}
	for _, f := range u["SystemCallFilter"] {
		if strings.HasPrefix(f, "~") {
			expand(groups, strings.Fields(f[1:]), denied)
		} else {
			expand(groups, strings.Fields(f), allowed)
		}
	}
	// What hbf calls beyond file and network I/O: bpf() for everything BPF,
	// setrlimit/prlimit64 (RLIMIT_MEMLOCK), ioctl (SIOCGIFHWADDR), the
	// sockets of the API, metrics and netlink.
	for _, call := range []string{"bpf", "prlimit64", "setrlimit", "ioctl", "socket", "bind", "sendto", "recvfrom", "getsockopt"} {
		if !allowed[call] || denied[call] {
			t.Errorf("SystemCallFilter does not allow %s()", call)
		}
	}
	if !slices.Contains(u["ProtectSystem"], "strict") {
		t.Errorf("ProtectSystem %v, want strict", u["ProtectSystem"])
	}
	writable := strings.Fields(strings.Join(u["ReadWritePaths"], " "))
	if !slices.Contains(writable, "/sys/fs/bpf") {
		t.Errorf("ReadWritePaths %v: /sys/fs/bpf, where hbf pins, is read-only under ProtectSystem=strict", writable)
	}
	if got := strings.Fields(strings.Join(u["CapabilityBoundingSet"], " ")); !slices.Equal(sorted(got), sorted(withCap(composeCaps(t)))) {
		t.Errorf("CapabilityBoundingSet %v, want the container's %v", got, withCap(composeCaps(t)))
	}
	for key, want := range map[string]string{"StateDirectory": "hbf", "RuntimeDirectory": "hbf", "Restart": "always"} {
		if !slices.Contains(u[key], want) {
			t.Errorf("%s %v, want %s", key, u[key], want)
		}
	}
	families := strings.Fields(strings.Join(u["RestrictAddressFamilies"], " "))
	for _, f := range []string{"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"} {
		if !slices.Contains(families, f) {
			t.Errorf("RestrictAddressFamilies %v lacks %s", families, f)
		}
	}
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

func withCap(caps []string) []string {
	out := make([]string, len(caps))
	for i, c := range caps {
		out[i] = "CAP_" + c
	}
	return out
}
