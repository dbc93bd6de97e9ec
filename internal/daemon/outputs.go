package daemon

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hbf-firewall/hbf/internal/report"
)

// outputs writes event lines to stdout and the log file from a queue of
// its own: a reader of stdout that stalls (a paused pager, a backed-up log
// collector) must not stall the event reader, the API or the state lock
// behind a blocked write. When the queue is full a line is dropped and
// counted (hbf_events_lost_total), and the count is logged once writing
// resumes.
type outputs struct {
	log     *slog.Logger
	format  report.Format
	queue   chan report.Event
	done    chan struct{}
	dropped atomic.Uint64
	// closing guards the queue's close against a late write.
	closing sync.RWMutex
	closed  bool

	mu     sync.Mutex // the writers, which reopen changes
	stdout *report.Writer
	file   *os.File
	toFile *report.Writer
	failed map[*report.Writer]bool
}

// outputQueue holds the lines waiting for a slow output: a burst of
// connections, or a second or two of a stalled reader.
const outputQueue = 16384

// openOutputs starts writing event lines in format to stdout (nil: none)
// and to the file at logFile ("": none).
func openOutputs(log *slog.Logger, format report.Format, stdout io.Writer, logFile string) (*outputs, error) {
	o := &outputs{log: log, format: format, failed: map[*report.Writer]bool{},
		queue: make(chan report.Event, outputQueue), done: make(chan struct{})}
	if stdout != nil {
		o.stdout = report.NewWriter(stdout, format)
	}
	if err := o.reopen(logFile); err != nil {
		return nil, err
	}
	go o.run()
	return o, nil
}

// reopen (re)opens the log file at path, "" for none: logrotate moves the
// file away, a reload makes a new one.
func (o *outputs) reopen(path string) error {
	var f *os.File
	if path != "" {
		var err error
		if f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640); err != nil {
			return fmt.Errorf("--log-file: %w", err)
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.file != nil {
		o.file.Close()
	}
	o.file, o.toFile = f, nil
	if f != nil {
		o.toFile = report.NewWriter(f, o.format)
	}
	return nil
}

// write queues ev for every output; it never blocks.
func (o *outputs) write(ev report.Event) {
	o.closing.RLock()
	defer o.closing.RUnlock()
	if o.closed {
		return
	}
	select {
	case o.queue <- ev:
	default:
		o.dropped.Add(1)
	}
}

// Dropped counts the lines dropped because the outputs did not keep up.
func (o *outputs) Dropped() uint64 { return o.dropped.Load() }

func (o *outputs) run() {
	defer close(o.done)
	var reported uint64
	for ev := range o.queue {
		o.mu.Lock()
		for _, w := range []*report.Writer{o.stdout, o.toFile} {
			if w == nil {
				continue
			}
			// One failing output does not stop the others.
			if err := w.Write(ev); err != nil && !o.failed[w] {
				o.failed[w] = true
				o.log.Error("cannot write events", "err", err)
			}
		}
		o.mu.Unlock()
		if n := o.dropped.Load(); n != reported {
			o.log.Warn("event lines were dropped: the output did not keep up (counted in hbf_events_lost_total)",
				"dropped", n-reported, "total", n)
			reported = n
		}
	}
}

// close writes what is queued, for at most a few seconds (the output may
// be the stalled one), and closes the log file.
func (o *outputs) close() {
	o.closing.Lock()
	o.closed = true
	close(o.queue)
	o.closing.Unlock()
	select {
	case <-o.done:
	case <-time.After(3 * time.Second):
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.file != nil {
		o.file.Close()
	}
}
