package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// composeService is what the container test takes from deploy/compose.yaml:
// it runs the image exactly as the compose file does, but in a lab.
type composeService struct {
	CapAdd      []string `yaml:"cap_add"`
	CapDrop     []string `yaml:"cap_drop"`
	SecurityOpt []string `yaml:"security_opt"`
	NetworkMode string   `yaml:"network_mode"`
	Volumes     []string `yaml:"volumes"`
}

func composeHBF(t *testing.T) composeService {
	t.Helper()
	b, err := os.ReadFile("../../deploy/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("deploy/compose.yaml: %v", err)
	}
	s, ok := f.Services["hbf"]
	if !ok {
		t.Fatal("deploy/compose.yaml has no service hbf")
	}
	return s
}

// podman is the engine the tests use: this machine has no docker engine.
// runc and cgroupfs work where systemd does not manage the cgroups.
func podman(args ...string) []string {
	return append([]string{"podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"}, args...)
}

// buildImage runs `make image` with podman and returns the image's name.
func buildImage(t *testing.T) string {
	t.Helper()
	testenv.RequireCommand(t, "podman")
	const image = "hbf-e2e"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "-C", "../..", "image", "IMAGE="+image, "VERSION=e2e",
		"CONTAINER_ENGINE="+strings.Join(podman(), " "))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	return image + ":latest"
}

// The image, run as deploy/compose.yaml runs it (its capabilities, security
// options and bpffs mount) in a lab host's network namespace: a scan from
// another namespace is reported and blocked, the metrics answer, the host's
// CLI reaches the daemon in the container, and a stop leaves nothing.
func TestContainerImage(t *testing.T) {
	t.Parallel()
	image := buildImage(t)
	svc := composeHBF(t)
	if svc.NetworkMode != "host" {
		t.Errorf("compose: network_mode %q, want host (XDP attaches to the host's interfaces)", svc.NetworkMode)
	}
	// At either hook: the compose file's capabilities are enough for both.
	for _, hook := range []string{"xdp", "tcx"} {
		t.Run(hook, func(t *testing.T) {
			testContainerAt(t, image, svc, hook)
		})
	}
}

func testContainerAt(t *testing.T, image string, svc composeService, hook string) {
	lab := newLab(t, netlab.Options{Peers: []string{"client", "scanner"}})
	serveHTTP(t, lab.Host, 8080, 8081, 8082, 8083)

	d := &daemonProc{t: t, pinPath: "/sys/fs/bpf/" + randomName("hbftest"), stateDir: t.TempDir(),
		ns: lab.Host, done: make(chan struct{})}
	name := randomName("hbf-e2e-")
	args := podman("run", "--rm", "--name", name, "--network", "ns:"+lab.Host.Path(),
		// This machine's root lacks CAP_SYS_RESOURCE: the engine may not
		// raise these limits to its defaults.
		"--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
		"-v", d.stateDir+":/var/lib/hbf")
	for _, c := range svc.CapDrop {
		args = append(args, "--cap-drop", c)
	}
	for _, c := range svc.CapAdd {
		args = append(args, "--cap-add", c)
	}
	for _, o := range svc.SecurityOpt {
		args = append(args, "--security-opt", o)
	}
	for _, v := range svc.Volumes {
		if strings.HasPrefix(v, "/sys/fs/bpf:") {
			args = append(args, "-v", "/sys/fs/bpf:/sys/fs/bpf")
		}
	}
	args = append(args, image, "daemon", "--iface", netlab.Iface, "--pin-path", d.pinPath,
		"--socket", "/var/lib/hbf/hbf.sock", "--detach-on-exit", "--attach", hook)
	d.start(exec.Command(args[0], args[1:]...))
	t.Cleanup(func() {
		exec.Command(podman("rm", "--force", name)[0], podman("rm", "--force", name)[1:]...).Run()
	})
	waitReady(t, d)
	if st := d.status(); len(st.Interfaces) != 1 || st.Interfaces[0].Hook != hook {
		t.Errorf("the container's hbf runs on %+v, want %s", st.Interfaces, hook)
	}

	if got := dialOutcome(lab.Peers["client"], hostPort(lab.Host.Addr4, 8080), 2*time.Second); got != "open" {
		t.Errorf("the client: %s, want open", got)
	}
	d.waitLine(line(`New connection: %s:\d+ -> %s:8080`, lab.Peers["client"].Addr4, lab.Host.Addr4))
	scanner := lab.Peers["scanner"]
	for port := 8080; port <= 8083; port++ {
		dialOutcome(scanner, hostPort(lab.Host.Addr4, port), 500*time.Millisecond)
	}
	d.waitLine(line(`Port scan detected: %s -> %s on ports 8080,8081,8082,8083`, scanner.Addr4, lab.Host.Addr4))
	d.waitLine(line(`Blocked %s for 1h0m0s: port scan`, scanner.Addr4))
	if got := dialOutcome(scanner, hostPort(lab.Host.Addr4, 8080), time.Second); got != "filtered" {
		t.Errorf("the scanner after its block: %s, want filtered", got)
	}

	resp, err := lab.Host.HTTPClient().Get("http://127.0.0.1:9717/metrics")
	if err != nil {
		t.Fatalf("metrics of the container: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "hbf_port_scans_detected_total 1") {
		t.Errorf("metrics: %s\n%s", resp.Status, body)
	}
	// The host's CLI, through the socket in the state volume.
	if findBlock(d.listJSON(), scanner.Addr4.String()+"/32", "scan") == nil {
		t.Error("hbf list from the host lacks the scanner")
	}

	if err := d.stop(); err != nil {
		t.Fatalf("stop the container: %v", err)
	}
	noXDP(t, lab.Host)
}
