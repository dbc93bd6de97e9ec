package daemon

import (
	"context"
	"encoding/json"
	"sync"
)

// hub keeps the recent event lines and hands new ones to followers. A
// follower that cannot keep up loses lines rather than slowing the daemon.
type hub struct {
	mu     sync.Mutex
	recent []json.RawMessage // a ring
	next   int
	full   bool
	subs   map[chan json.RawMessage]struct{}
}

const recentEvents = 1000

func newHub() *hub {
	return &hub{recent: make([]json.RawMessage, recentEvents), subs: map[chan json.RawMessage]struct{}{}}
}

func (h *hub) publish(line json.RawMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recent[h.next] = line
	h.next = (h.next + 1) % len(h.recent)
	h.full = h.full || h.next == 0
	for ch := range h.subs {
		select {
		case ch <- line:
		default:
		}
	}
}

// Events calls fn with the recent lines, then with new ones until ctx ends
// when follow is set.
func (h *hub) Events(ctx context.Context, follow bool, fn func(json.RawMessage) error) error {
	h.mu.Lock()
	var backlog []json.RawMessage
	if h.full {
		backlog = append(backlog, h.recent[h.next:]...)
	}
	backlog = append(backlog, h.recent[:h.next]...)
	var ch chan json.RawMessage
	if follow {
		ch = make(chan json.RawMessage, 4096)
		h.subs[ch] = struct{}{}
		defer func() {
			h.mu.Lock()
			delete(h.subs, ch)
			h.mu.Unlock()
		}()
	}
	h.mu.Unlock()

	for _, line := range backlog {
		if err := fn(line); err != nil {
			return err
		}
	}
	if !follow {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case line := <-ch:
			if err := fn(line); err != nil {
				return err
			}
		}
	}
}
