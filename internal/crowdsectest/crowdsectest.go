// Package crowdsectest runs a real CrowdSec Local API (Debian's crowdsec,
// as `crowdsec -no-cs`) for tests: a config folder and SQLite database of
// the test's own, no central API, listening on a lab address; cscli
// against it; stopped by pid when the test ends.
package crowdsectest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// Options shape a LAPI.
type Options struct {
	// NS runs it in a lab namespace, listening on Addr there.
	NS   *netlab.NS
	Addr netip.Addr
	Port int // 0: 8080
	// TLS serves HTTPS with a certificate of a CA of the test's own, and
	// takes client certificates of BouncerOU for bouncers (LAPI.TLS).
	TLS bool
}

// LAPI is a running CrowdSec Local API.
type LAPI struct {
	t      testing.TB
	opts   Options
	dir    string
	config string
	cscli  string
	// TLS are the PEM files of a TLS LAPI.
	TLS TLSFiles

	mu   sync.Mutex
	cmd  *exec.Cmd
	done <-chan struct{}
	log  *os.File
}

// Start runs a LAPI and waits until it answers.
func Start(t testing.TB, opts Options) *LAPI {
	t.Helper()
	testenv.RequireCommand(t, "crowdsec")
	l := &LAPI{t: t, opts: opts, dir: t.TempDir(), cscli: testenv.RequireCommand(t, "cscli")}
	if l.opts.Port == 0 {
		l.opts.Port = 8080
	}
	if opts.TLS {
		l.TLS = issueTLS(t, opts.Addr)
	}
	l.writeConfig()
	// cscli talks to the LAPI as a machine: registered before it starts.
	l.Cscli("machines", "add", "cscli", "--auto", "--force", "-f", filepath.Join(l.dir, "local_api_credentials.yaml"),
		"--url", l.URL())
	l.Start()
	t.Cleanup(l.Kill)
	return l
}

// URL is where bouncers and machines reach it.
func (l *LAPI) URL() string {
	scheme := "http://"
	if l.opts.TLS {
		scheme = "https://"
	}
	return scheme + net.JoinHostPort(l.opts.Addr.String(), strconv.Itoa(l.opts.Port))
}

// writeConfig writes a config.yaml of the test's own: its folders, its
// database, its address; the package's profiles; no central API, no
// metrics port, no acquisition. With TLS, cscli does not check LAPI's
// certificate: it is the test's, and cscli is not what the test tests.
func (l *LAPI) writeConfig() {
	t := l.t
	data := filepath.Join(l.dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`common:
  daemonize: false
  log_media: stdout
  log_level: info
config_paths:
  config_dir: %[1]s/
  data_dir: %[2]s/
  simulation_path: /etc/crowdsec/simulation.yaml
  hub_dir: /etc/crowdsec/hub/
  index_path: /etc/crowdsec/hub/.index.json
  notification_dir: /etc/crowdsec/notifications/
  plugin_dir: /usr/lib/crowdsec/plugins/
cscli:
  output: json
db_config:
  log_level: info
  type: sqlite
  db_path: %[2]s/crowdsec.db
  use_wal: true
api:
  client:
    insecure_skip_verify: %[4]v
    credentials_path: %[1]s/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: %[3]s
    profiles_path: /etc/crowdsec/profiles.yaml
%[5]sprometheus:
  enabled: false
`, l.dir, data, net.JoinHostPort(l.opts.Addr.String(), strconv.Itoa(l.opts.Port)), l.opts.TLS, l.tlsConfig())
	l.config = filepath.Join(l.dir, "config.yaml")
	if err := os.WriteFile(l.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// tlsConfig is the api.server.tls section of a TLS LAPI.
func (l *LAPI) tlsConfig() string {
	if !l.opts.TLS {
		return ""
	}
	return fmt.Sprintf(`    tls:
      cert_file: %s
      key_file: %s
      ca_cert_path: %s
      client_verification: VerifyClientCertIfGiven
      bouncers_allowed_ou: [%s]
      agents_allowed_ou: [agent-ou]
`, l.TLS.ServerCert, l.TLS.ServerKey, l.TLS.CA, BouncerOU)
}

// Start runs the LAPI (again, after Kill) and waits until it answers.
func (l *LAPI) Start() {
	t := l.t
	t.Helper()
	cmd := l.opts.NS.Command(context.Background(), "crowdsec", "-c", l.config, "-no-cs")
	log, done, err := testenv.StartLogged(cmd, filepath.Join(l.dir, "crowdsec.log"))
	if err != nil {
		t.Fatalf("start crowdsec: %v", err)
	}
	l.mu.Lock()
	l.cmd, l.done, l.log = cmd, done, log
	l.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for !l.answers() {
		select {
		case <-done:
			t.Fatalf("crowdsec exited at start:\n%s", l.Log())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the LAPI does not answer after 30 s:\n%s", l.Log())
		}
	}
}

// answers reports whether the LAPI serves HTTP: a stream read without a
// key is refused, which takes a LAPI that runs.
func (l *LAPI) answers() bool {
	c := l.opts.NS.HTTPClient()
	c.Timeout = time.Second
	if l.opts.TLS {
		c.Transport.(*http.Transport).TLSClientConfig = l.TLS.clientTLS(l.t)
	}
	resp, err := c.Get(l.URL() + "/v1/decisions/stream")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusForbidden
}

// Kill stops the LAPI by its pid; its database stays for Start.
func (l *LAPI) Kill() {
	l.mu.Lock()
	cmd, done := l.cmd, l.done
	l.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-done
	l.mu.Lock()
	l.cmd = nil
	l.log.Close()
	l.mu.Unlock()
}

// Log is what the LAPI wrote.
func (l *LAPI) Log() string {
	b, _ := os.ReadFile(filepath.Join(l.dir, "crowdsec.log"))
	return string(b)
}

// Cscli runs cscli against this LAPI and returns its output.
func (l *LAPI) Cscli(args ...string) string {
	l.t.Helper()
	out, err := l.TryCscli(args...)
	if err != nil {
		l.t.Fatalf("cscli %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

// TryCscli is Cscli, with its error: what it wrote on stdout, its
// warnings in the error only.
func (l *LAPI) TryCscli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := l.opts.NS.Command(ctx, l.cscli, append([]string{"-c", l.config}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%w: %s", err, stderr.String())
	}
	return string(out), nil
}

// BouncerKey registers a bouncer and returns its API key.
func (l *LAPI) BouncerKey(name string) string {
	l.t.Helper()
	return strings.TrimSpace(l.Cscli("bouncers", "add", name, "-o", "raw"))
}

// Machine registers a machine with a password.
func (l *LAPI) Machine(name, password string) {
	l.t.Helper()
	l.Cscli("machines", "add", name, "--password", password, "-f", "/dev/null", "--force")
}
