package e2e

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/netlab"
)

// feedServer serves a list over HTTP from a lab namespace, with an ETag,
// and counts what it answered.
type feedServer struct {
	mu          sync.Mutex
	content     string
	down        bool
	served      int
	notModified int
}

func (f *feedServer) set(content string, down bool) {
	f.mu.Lock()
	f.content, f.down = content, down
	f.mu.Unlock()
}

func (f *feedServer) counts() (served, notModified int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.served, f.notModified
}

func (f *feedServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	etag := fmt.Sprintf(`"%x"`, sha256.Sum256([]byte(f.content)))
	if r.Header.Get("If-None-Match") == etag {
		f.notModified++
		w.WriteHeader(http.StatusNotModified)
		return
	}
	f.served++
	w.Header().Set("ETag", etag)
	io.WriteString(w, f.content)
}

func serveFeed(t *testing.T, ns *netlab.NS, content string) (*feedServer, string) {
	t.Helper()
	feed := &feedServer{content: content}
	ln, err := ns.Listen("tcp", ":8000")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: feed}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return feed, fmt.Sprintf("http://%s:8000/drop.txt", ns.Addr4)
}

func TestFeedRefreshAndFeedDown(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"feed", "bad", "worse"}})
	serveHTTP(t, lab.Host, 8080)
	host := lab.Host.Addr4
	bad, worse := lab.Peers["bad"], lab.Peers["worse"]
	feed, url := serveFeed(t, lab.Peers["feed"], fmt.Sprintf("; DROP-style list\n%s ; SBL1\n198.51.100.0/24 ; SBL2\n", bad.Addr4))

	d := startDaemon(t, lab, "--blocklist-url", url, "--feed-refresh", "1s", "--detach-on-exit=false")
	if got := dialOutcome(bad, hostPort(host, 8080), time.Second); got != "filtered" {
		t.Errorf("a feed entry got through: %s", got)
	}
	if st := d.status(); len(st.Lists) != 1 || st.Lists[0].Entries != 2 || st.Lists[0].Status != "ok" {
		t.Errorf("lists %+v", st.Lists)
	}
	eventually(t, "refreshes are conditional (304)", func() bool { _, nm := feed.counts(); return nm >= 2 })

	feed.set(fmt.Sprintf("%s\n", worse.Addr4), false)
	eventually(t, "the feed's change applies", func() bool {
		return dialOutcome(bad, hostPort(host, 8080), 2*time.Second) == "open" &&
			dialOutcome(worse, hostPort(host, 8080), 500*time.Millisecond) == "filtered"
	})

	feed.set("", true)
	eventually(t, "a feed down is reported", func() bool {
		st := d.status()
		return len(st.Lists) == 1 && strings.Contains(st.Lists[0].Status, "503 Service Unavailable")
	})
	if got := dialOutcome(worse, hostPort(host, 8080), time.Second); got != "filtered" {
		t.Errorf("with the feed down its entries went: %s", got)
	}
	if v := scrape(t, d).value(t, "hbf_blocklist_sources", "degraded"); v != 1 {
		t.Errorf("degraded sources metric %v, want 1", v)
	}

	// A restart while the feed is down: its cached copy stands in.
	d.mustCLI("stop")
	d.wait(20 * time.Second)
	r := d.restart(lab, "--blocklist-url", url)
	if got := dialOutcome(worse, hostPort(host, 8080), time.Second); got != "filtered" {
		t.Errorf("after a restart with the feed down: %s", got)
	}
	if !strings.Contains(r.stderrText(), "using its last good copy") {
		t.Errorf("the cached copy was not said:\n%s", r.stderrText())
	}
}

func TestBadFeedStopsFirstStart(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"feed"}})
	_, url := serveFeed(t, lab.Peers["feed"], "192.0.2.7\n10.0.0.300\n")
	d := tryDaemon(t, lab, "--blocklist-url", url)
	if err := d.wait(20 * time.Second); err == nil {
		t.Fatal("started with a feed that does not parse and no copy of it")
	}
	if want := url + ` line 2: "10.0.0.300" is not an IP or CIDR`; !strings.Contains(d.stderrText(), want) {
		t.Errorf("stderr does not say %q:\n%s", want, d.stderrText())
	}
	noXDP(t, lab.Host)
}
