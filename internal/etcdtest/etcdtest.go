// Package etcdtest runs a real etcd (Debian's etcd-server) for tests: one
// member, its data in a folder of the test's, listening on loopback or in a
// lab namespace, with the faults a fleet must survive at hand: SIGSTOP and
// SIGCONT, kill and restart, compaction.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// Options shape a server.
type Options struct {
	// NS runs it in a lab namespace, listening on Addr there; nil: on
	// 127.0.0.1 of the test's own namespace.
	NS   *netlab.NS
	Addr netip.Addr
	// TLS makes it serve HTTPS with these files and require client
	// certificates signed by CA.
	TLS *TLSFiles
}

// TLSFiles are the PEM files of a server's TLS.
type TLSFiles struct {
	CA, Cert, Key string
}

// Server is a running etcd.
type Server struct {
	t       testing.TB
	opts    Options
	dir     string
	client  int // ports
	peer    int
	etcdctl string

	root string // "root:password" once authentication is on

	mu      sync.Mutex
	cmd     *exec.Cmd
	proxies []*exec.Cmd
	done    <-chan struct{}
	log     *os.File
}

// Start runs an etcd and waits until it answers.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	testenv.RequireCommand(t, "etcd")
	s := &Server{t: t, opts: opts, dir: t.TempDir(), etcdctl: testenv.RequireCommand(t, "etcdctl")}
	if !opts.Addr.IsValid() {
		s.opts.Addr = netip.MustParseAddr("127.0.0.1")
	}
	s.client, s.peer = freePort(t), freePort(t)
	s.start()
	t.Cleanup(s.Kill)
	return s
}

// freePort is a TCP port nothing listens on now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (s *Server) scheme() string {
	if s.opts.TLS != nil {
		return "https"
	}
	return "http"
}

// Endpoint is the URL clients use.
func (s *Server) Endpoint() string {
	return fmt.Sprintf("%s://%s", s.scheme(), net.JoinHostPort(s.opts.Addr.String(), strconv.Itoa(s.client)))
}

func (s *Server) start() {
	t := s.t
	t.Helper()
	peer := fmt.Sprintf("http://%s", net.JoinHostPort(s.opts.Addr.String(), strconv.Itoa(s.peer)))
	args := []string{"--name", "t", "--data-dir", filepath.Join(s.dir, "data"),
		"--listen-client-urls", s.Endpoint(), "--advertise-client-urls", s.Endpoint(),
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "t=" + peer,
		"--log-level", "warn", "--logger", "zap"}
	if f := s.opts.TLS; f != nil {
		args = append(args, "--cert-file", f.Cert, "--key-file", f.Key, "--trusted-ca-file", f.CA, "--client-cert-auth")
	}
	var cmd *exec.Cmd
	if s.opts.NS != nil {
		cmd = s.opts.NS.Command(context.Background(), "etcd", args...)
	} else {
		cmd = exec.Command("etcd", args...)
	}
	log, done, err := testenv.StartLogged(cmd, filepath.Join(s.dir, "etcd.log"))
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	s.mu.Lock()
	s.cmd, s.done, s.log = cmd, done, log
	s.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := s.Ctl("endpoint", "health"); err == nil {
			return
		}
		select {
		case <-done:
			t.Fatalf("etcd exited at start:\n%s", s.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd not healthy after 20s:\n%s", s.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Log is what etcd wrote.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "etcd.log"))
	return string(b)
}

// Ctl runs etcdctl against the server.
func (s *Server) Ctl(args ...string) (string, error) {
	full := append([]string{"--endpoints", s.Endpoint(), "--command-timeout", "5s"}, args...)
	if f := s.opts.TLS; f != nil {
		full = append(full, "--cacert", f.CA, "--cert", f.Cert, "--key", f.Key)
	}
	if s.root != "" {
		full = append(full, "--user", s.root)
	}
	return s.run(full)
}

// CtlAs runs etcdctl as user, with password: to show what a user may not do.
func (s *Server) CtlAs(user, password string, args ...string) (string, error) {
	full := append([]string{"--endpoints", s.Endpoint(), "--command-timeout", "5s", "--user", user + ":" + password}, args...)
	if f := s.opts.TLS; f != nil {
		full = append(full, "--cacert", f.CA, "--cert", f.Cert, "--key", f.Key)
	}
	return s.run(full)
}

func (s *Server) run(full []string) (string, error) {
	args := full
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	if s.opts.NS != nil {
		cmd = s.opts.NS.Command(ctx, s.etcdctl, full...)
	} else {
		cmd = exec.CommandContext(ctx, s.etcdctl, full...)
	}
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("etcdctl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// User is an etcd user and what its role lets it do: read or write the
// keys it names, a name ending in "/" standing for every key under it.
type User struct {
	Name, Password string
	Read, Write    []string
}

// EnableAuth creates the users, each with a role of its name, and turns
// authentication on; etcdctl then runs as root.
func (s *Server) EnableAuth(users ...User) {
	s.t.Helper()
	s.MustCtl("user", "add", "root:root", "--interactive=false")
	s.MustCtl("user", "grant-role", "root", "root")
	for _, u := range users {
		s.MustCtl("role", "add", u.Name)
		for perm, keys := range map[string][]string{"read": u.Read, "readwrite": u.Write} {
			for _, k := range keys {
				args := []string{"role", "grant-permission", u.Name, perm, k}
				if strings.HasSuffix(k, "/") {
					args = append(args, "--prefix=true")
				}
				s.MustCtl(args...)
			}
		}
		s.MustCtl("user", "add", u.Name+":"+u.Password, "--interactive=false")
		s.MustCtl("user", "grant-role", u.Name, u.Name)
	}
	s.MustCtl("auth", "enable")
	s.root = "root:root"
}

// MustCtl is Ctl that fails the test on an error.
func (s *Server) MustCtl(args ...string) string {
	s.t.Helper()
	out, err := s.Ctl(args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Pause stops the process (SIGSTOP): connections stay open, nothing answers.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

// Kill ends the server at once (SIGKILL); its data stays for Restart.
func (s *Server) Kill() {
	s.signal(syscall.SIGCONT)
	s.signal(syscall.SIGKILL)
	s.mu.Lock()
	done, log := s.done, s.log
	s.mu.Unlock()
	if done != nil {
		<-done
	}
	if log != nil {
		log.Close()
	}
}

// Restart kills the server and starts it again on its data.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}

// Compact compacts the key space up to the current revision, so a watch
// from an older one fails with ErrCompacted.
func (s *Server) Compact() int64 {
	s.t.Helper()
	out := s.MustCtl("endpoint", "status", "--write-out", "fields")
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, `"Revision" : `); ok {
			rev, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				s.t.Fatal(err)
			}
			s.MustCtl("compact", strconv.FormatInt(rev, 10), "--physical")
			return rev
		}
	}
	s.t.Fatalf("no revision in etcdctl's status:\n%s", out)
	return 0
}

// Proxy starts an etcd grpc-proxy in front of the server, which coalesces
// the watches of many clients into one, and returns its endpoint.
func (s *Server) Proxy() string {
	s.t.Helper()
	port := freePort(s.t)
	endpoint := fmt.Sprintf("http://%s", net.JoinHostPort(s.opts.Addr.String(), strconv.Itoa(port)))
	log, err := os.OpenFile(filepath.Join(s.dir, "proxy.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command("etcd", "grpc-proxy", "start", "--endpoints", strings.TrimPrefix(s.Endpoint(), "http://"),
		"--listen-addr", strings.TrimPrefix(endpoint, "http://"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start etcd grpc-proxy: %v", err)
	}
	s.mu.Lock()
	s.proxies = append(s.proxies, cmd)
	s.mu.Unlock()
	s.t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := s.run([]string{"--endpoints", endpoint, "--command-timeout", "2s", "get", "/"}); err == nil {
			return endpoint
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("etcd grpc-proxy not answering after 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// CPU is the CPU time etcd and its grpc-proxies have used so far, user
// and system, at the kernel's clock tick (10 ms).
func (s *Server) CPU() time.Duration {
	s.t.Helper()
	s.mu.Lock()
	cmds := append([]*exec.Cmd{s.cmd}, s.proxies...)
	s.mu.Unlock()
	var total time.Duration
	for _, c := range cmds {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
		if err != nil {
			s.t.Fatal(err)
		}
		// After the command's name in parentheses: utime and stime are
		// the 12th and 13th fields.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		for _, v := range f[11:13] {
			ticks, err := strconv.Atoi(v)
			if err != nil {
				s.t.Fatal(err)
			}
			total += time.Duration(ticks) * 10 * time.Millisecond
		}
	}
	return total
}
