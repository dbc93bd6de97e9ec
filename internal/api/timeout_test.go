package api

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hbf-firewall/hbf/internal/testenv"
)

// streamService streams events as fast as they are taken, and says when a
// stream ended.
type streamService struct {
	okService
	ended chan error
}

func (s *streamService) Events(ctx context.Context, _ bool, fn func(json.RawMessage) error) error {
	line := json.RawMessage(`{"event":"connection","src":"192.0.2.7","src_port":40000,"dst":"192.0.2.1","dst_port":80}`)
	for {
		if err := fn(line); err != nil {
			s.ended <- err
			return err
		}
	}
}

func serveTest(t *testing.T, svc Service, to Timeouts) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hbf.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Serve(ctx, ln, svc, to); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return path
}

// closedWithin reports whether the server closes c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	return err == nil // EOF: the server hung up; a timeout is an error
}

var short = Timeouts{Header: 200 * time.Millisecond, Read: 400 * time.Millisecond, Write: 300 * time.Millisecond, Idle: 300 * time.Millisecond}

func TestSlowClientsAreCutOff(t *testing.T) {
	svc := &okService{}
	path := serveTest(t, svc, short)
	dial := func() net.Conn {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	// Slowloris: a header that never ends.
	c := dial()
	io.WriteString(c, "POST /v1/block HTTP/1.1\r\nHost: hbf\r\n")
	if !closedWithin(c, 3*time.Second) {
		t.Error("a client that never finishes its header kept the connection")
	}
	// A body that never comes: cut off, and nothing reaches the service.
	c = dial()
	io.WriteString(c, "POST /v1/block HTTP/1.1\r\nHost: hbf\r\nContent-Length: 100\r\n\r\n{\"targets\":")
	if !closedWithin(c, 3*time.Second) {
		t.Error("a client that never finishes its body kept the connection")
	}
	if svc.calls != 0 {
		t.Errorf("the service was called %d times with a partial body", svc.calls)
	}
	// Idle keep-alive connections are closed.
	c = dial()
	io.WriteString(c, "GET /v1/status HTTP/1.1\r\nHost: hbf\r\n\r\n")
	if !closedWithin(c, 3*time.Second) {
		t.Error("an idle connection was kept")
	}
}

// A client that follows events and stops reading is cut off: the stream's
// writes block, and the write deadline ends the request.
func TestStalledEventReaderIsCutOff(t *testing.T) {
	testenv.RequirePrivileged(t) // the API serves root only
	svc := &streamService{ended: make(chan error, 1)}
	path := serveTest(t, svc, short)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /v1/events?follow=true HTTP/1.1\r\nHost: hbf\r\n\r\n")
	// Never read.
	select {
	case err := <-svc.ended:
		if err == nil {
			t.Error("the stream ended without an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled events reader still holds its stream after 10 s")
	}
}

// The socket is created 0600 even under a permissive umask: the umask is
// narrowed around bind, so no moment exists when others could connect.
func TestSocketIsCreatedRootOnly(t *testing.T) {
	old := unix.Umask(0)
	defer unix.Umask(old)
	path := filepath.Join(t.TempDir(), "run", "hbf.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s created %v under umask 0, want %v", p, got, want)
		}
	}
}
