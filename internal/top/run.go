package top

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/hbf-firewall/hbf/internal/report"
)

// Run shows the live view on the terminal of stdin and out until the
// operator quits or ctx ends; the terminal is restored either way.
func Run(ctx context.Context, c API, opts Options, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The default input: Bubble Tea puts the terminal in raw mode only
	// when it opens stdin itself, and keys must come one at a time.
	p := tea.NewProgram(New(ctx, c, opts), tea.WithContext(ctx), tea.WithAltScreen(), tea.WithOutput(out))
	go follow(ctx, c, p.Send)
	_, err := p.Run()
	if err == tea.ErrProgramKilled && ctx.Err() != nil {
		return nil
	}
	return err
}

// follow streams the daemon's events to send, again after the stream ends
// (the daemon stopped), until ctx ends. Each stream is a generation: it
// starts with the daemon's recent events, which replace those shown.
func follow(ctx context.Context, c API, send func(tea.Msg)) {
	for gen := 1; ctx.Err() == nil; gen++ {
		_ = c.Events(ctx, true, func(line []byte) error {
			if text, ok := eventText(line); ok {
				send(eventMsg{gen: gen, line: text})
			}
			return nil
		})
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// eventText is an event line as the view shows it: the daemon's text line
// from the time of day on. New connections are left out: there may be
// thousands a second, and the rates count them.
func eventText(line []byte) (string, bool) {
	ev, err := report.ParseJSON(line)
	if err != nil {
		return "", false
	}
	if _, ok := ev.(*report.Connection); ok {
		return "", false
	}
	var b bytes.Buffer
	if err := report.NewWriter(&b, report.Text).Write(ev); err != nil {
		return "", false
	}
	text := strings.TrimSpace(b.String())
	if len(text) > 11 && text[4] == '-' && text[10] == ' ' {
		text = text[11:] // the date: the view is of today
	}
	return text, true
}

// Snapshot is one look at what hbf does, an interval long: hbf top when
// its output is not a terminal, as text or JSON.
type Snapshot struct {
	Time    time.Time         `json:"time"`
	Rates   Rates             `json:"rates"`
	Sources []Row             `json:"sources"`
	Events  []json.RawMessage `json:"events"` // newest first, new connections left out
	model   Model
}

// Take takes a snapshot: two looks an interval apart, since rates need
// two, and the recent events.
func Take(ctx context.Context, c API, opts Options) (Snapshot, error) {
	first, err := look(ctx, c, opts.Sources)
	if err != nil {
		return Snapshot{}, err
	}
	select {
	case <-ctx.Done():
		return Snapshot{}, ctx.Err()
	case <-time.After(opts.Interval):
	}
	second, err := look(ctx, c, opts.Sources)
	if err != nil {
		return Snapshot{}, err
	}
	m := New(ctx, c, opts)
	m.history = []sample{first, second}
	s := Snapshot{Time: second.at, Rates: ratesBetween(first, second), Sources: m.rows(), Events: []json.RawMessage{}}
	err = c.Events(ctx, false, func(line []byte) error {
		if text, ok := eventText(line); ok {
			s.Events = append([]json.RawMessage{append(json.RawMessage(nil), line...)}, s.Events...)
			m.events = append([]string{text}, m.events...)
		}
		return nil
	})
	s.model = m
	return s, err
}

// Text writes the snapshot as the screen shows it, every source and event
// listed, width columns wide.
func (s Snapshot) Text(w io.Writer, width int) error {
	m := s.model
	m.width, m.height, m.batch = width, len(s.Sources)+len(s.Events)+20, true
	lines := strings.Split(m.View(), "\n")
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	_, err := io.WriteString(w, strings.Join(lines, "\n")+"\n")
	return err
}
