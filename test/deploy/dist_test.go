package deploy

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/testenv"
)

// make dist: static binaries for amd64 and arm64, a .deb of each with the
// binary, the systemd unit and the example configuration, and checksums
// of them all.
func TestDist(t *testing.T) {
	testenv.RequireCommand(t, "dpkg-deb")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "make", "-C", "../..", "dist", "DIST="+dir, "VERSION=v1.2.3").CombinedOutput(); err != nil {
		t.Fatalf("make dist: %v\n%s", err, out)
	}
	check := exec.Command("sha256sum", "--check", "--strict", "SHA256SUMS")
	check.Dir = dir
	if out, err := check.CombinedOutput(); err != nil || strings.Count(string(out), ": OK") != 4 {
		t.Errorf("sha256sum --check: %v\n%s", err, out)
	}
	unit, err := os.ReadFile("../../deploy/systemd/hbf.service")
	if err != nil {
		t.Fatal(err)
	}

	for arch, machine := range map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64} {
		bin := filepath.Join(dir, "hbf-v1.2.3-linux-"+arch)
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatalf("%s: %v", bin, err)
		}
		if f.Machine != machine {
			t.Errorf("%s is for %v", bin, f.Machine)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked", bin)
			}
		}
		f.Close()

		deb := filepath.Join(dir, "hbf_1.2.3_"+arch+".deb")
		fields, err := exec.Command("dpkg-deb", "--field", deb, "Package", "Version", "Architecture").Output()
		if err != nil {
			t.Fatalf("dpkg-deb --field %s: %v", deb, err)
		}
		if want := "Package: hbf\nVersion: 1.2.3\nArchitecture: " + arch + "\n"; string(fields) != want {
			t.Errorf("%s control:\n%s\nwant:\n%s", deb, fields, want)
		}
		root := t.TempDir()
		if out, err := exec.Command("dpkg-deb", "--extract", deb, root).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb --extract: %v\n%s", err, out)
		}
		if got, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/hbf.service")); err != nil || string(got) != string(unit) {
			t.Errorf("%s: the unit is not deploy/systemd/hbf.service (%v)", deb, err)
		}
		st, err := os.Stat(filepath.Join(root, "usr/bin/hbf"))
		if err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("%s: /usr/bin/hbf %v (%v)", deb, st, err)
		}
		if _, err := os.Stat(filepath.Join(root, "usr/share/doc/hbf/examples/hbf.yaml")); err != nil {
			t.Errorf("%s: no example configuration: %v", deb, err)
		}
		control := t.TempDir()
		if out, err := exec.Command("dpkg-deb", "--control", deb, control).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb --control: %v\n%s", err, out)
		}
		for _, script := range []string{"postinst", "prerm", "postrm"} {
			if st, err := os.Stat(filepath.Join(control, script)); err != nil || st.Mode().Perm()&0o111 == 0 {
				t.Errorf("%s: maintainer script %s missing or not executable", deb, script)
			}
		}
		if arch == "amd64" {
			out, err := exec.Command(filepath.Join(root, "usr/bin/hbf"), "--version").Output()
			if err != nil || !strings.Contains(string(out), "v1.2.3") {
				t.Errorf("the packaged hbf --version: %q, %v", out, err)
			}
		}
	}
}
