package kerneltest

import (
	"net/netip"
	"slices"
	"time"

	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/ports"
)

// What the fake keeps of the program besides its rules: the counters, the
// settings, the host's addresses and served ports, and what only the
// program does (a scan block, a dropped packet), for tests to do.

// Counters returns the counters SetCounters set.
func (f *Fake) Counters() (dataplane.Counters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counters, nil
}

// SetCounters sets what Counters returns, as the program's packets would.
func (f *Fake) SetCounters(c dataplane.Counters) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counters = c
}

// SetSettings checks and keeps the program's settings.
func (f *Fake) SetSettings(s dataplane.Settings) error {
	if err := s.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.settings = s
	return nil
}

// LimitStats says what each limit of the settings did: what
// SetLimitStats set, for the limits set.
func (f *Fake) LimitStats() (map[ports.Port]dataplane.LimitStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[ports.Port]dataplane.LimitStats)
	for _, l := range f.settings.Limits {
		out[l.Port] = f.limitStats[l.Port]
	}
	return out, nil
}

// SetLimitStats sets what a limit did, as the program would.
func (f *Fake) SetLimitStats(p ports.Port, st dataplane.LimitStats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.limitStats == nil {
		f.limitStats = make(map[ports.Port]dataplane.LimitStats)
	}
	f.limitStats[p] = st
}

// Settings returns what SetSettings set.
func (f *Fake) Settings() dataplane.Settings {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.settings
}

// SetOnLink keeps the on-link prefixes.
func (f *Fake) SetOnLink(prefixes []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onLink = slices.Clone(prefixes)
	return nil
}

// SetLocalAddrs keeps the host's addresses.
func (f *Fake) SetLocalAddrs(addrs []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.local = slices.Clone(addrs)
	return nil
}

// LocalAddrs returns what SetLocalAddrs set.
func (f *Fake) LocalAddrs() []netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.local)
}

// SetServed keeps the ports served without a socket.
func (f *Fake) SetServed(served []ports.Port) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.served = slices.Clone(served)
	return nil
}

// Served returns what SetServed set.
func (f *Fake) Served() []ports.Port {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.served)
}

// OnLink returns what SetOnLink set.
func (f *Fake) OnLink() []netip.Prefix {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.onLink)
}

// ScanBlock does what the program does when a source crosses the scan
// threshold: it blocks the source itself, with origin scan.
func (f *Fake) ScanBlock(p netip.Prefix, created, expires time.Time) {
	f.KernelBlock(p, created, expires, dataplane.OriginScan)
}

// KernelBlock does what the program does when it blocks a source itself,
// with origin (scan, limit).
func (f *Fake) KernelBlock(p netip.Prefix, created, expires time.Time, origin dataplane.Origin) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, _, _ := f.blocksOf(p)
	m[p] = dataplane.Rule{Prefix: p, Created: created, Expires: expires, Origin: origin}
}

// Drop counts n packets against the block of exactly p, as the program
// does for each packet it drops, and notes the block while hot blocks are
// watched (the program notes it at marks of its count; the fake at every
// drop).
func (f *Fake) Drop(p netip.Prefix, n uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, _, _ := f.blocksOf(p)
	if r, ok := m[p]; ok {
		r.Packets += n
		m[p] = r
		if f.watchHot {
			f.hot = append(f.hot, dataplane.Hot{Prefix: p, Packets: r.Packets})
		}
	}
}

// WatchHot turns the noting of hot blocks on or off.
func (f *Fake) WatchHot(on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchHot = on
	return nil
}

// WatchingHot reports whether hot blocks are noted.
func (f *Fake) WatchingHot() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.watchHot
}

// DrainHot returns the blocks noted since the last drain.
func (f *Fake) DrainHot() ([]dataplane.Hot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.hot
	f.hot = nil
	return out, nil
}
