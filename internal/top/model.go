package top

import (
	"context"
	"net/netip"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/hbf-firewall/hbf/internal/api"
)

// Options shape the view.
type Options struct {
	Interval time.Duration // between two looks
	Sources  int           // asked of the daemon at each look
	Color    bool          // colours; without them, the view reads the same
}

// keepEvents bounds the events the view keeps.
const keepEvents = 200

// Model is the view's state: what the daemon said, and what the operator
// asked for. Update changes it by messages alone, so a test drives it
// without a terminal.
type Model struct {
	api  API
	opts Options
	ctx  context.Context

	width, height int
	history       []sample  // the last minute's looks, oldest first
	err           error     // the last look's failure, while it lasts
	errSince      time.Time //
	events        []string  // newest first
	eventsGen     int

	paused   bool
	sort     Sort
	filter   Filter
	typing   bool   // an address filter is being typed
	input    string // what was typed of it
	selected int
	help     bool
	why      *api.Why // shown for the selected source
	whyErr   error
	styles   styles
	batch    bool // a snapshot printed: no selection, no keys
}

// New is a model reading c.
func New(ctx context.Context, c API, opts Options) Model {
	return Model{api: c, opts: opts, ctx: ctx, width: 80, height: 24, styles: newStyles(opts.Color)}
}

// Messages.
type (
	lookMsg struct {
		s   sample
		err error
	}
	tickMsg  struct{}
	eventMsg struct {
		gen  int // a new generation: the stream was opened again
		line string
	}
	whyMsg struct {
		why api.Why
		err error
	}
)

// Init looks at once.
func (m Model) Init() tea.Cmd { return m.look() }

func (m Model) look() tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(m.ctx, max(m.opts.Interval, time.Second))
		defer cancel()
		s, err := look(ctx, m.api, m.opts.Sources)
		return lookMsg{s, err}
	}
}

func (m Model) tick() tea.Cmd {
	return tea.Tick(m.opts.Interval, func(time.Time) tea.Msg { return tickMsg{} })
}

// Update takes a message.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case lookMsg:
		if msg.err != nil {
			if m.err == nil {
				m.errSince = time.Now()
			}
			m.err = msg.err
		} else {
			m.err = nil
			if !m.paused {
				m.remember(msg.s)
			}
		}
		return m, m.tick()
	case tickMsg:
		return m, m.look()
	case eventMsg:
		if msg.gen != m.eventsGen {
			m.events, m.eventsGen = nil, msg.gen
		}
		if msg.line != "" && !m.paused {
			m.events = append([]string{msg.line}, m.events[:min(len(m.events), keepEvents-1)]...)
		}
	case whyMsg:
		m.why, m.whyErr = &msg.why, msg.err
	case tea.KeyMsg:
		return m.key(msg)
	}
	return m, nil
}

// remember keeps s, and the looks of the last minute before it.
func (m *Model) remember(s sample) {
	m.history = append(m.history, s)
	for len(m.history) > 2 && s.at.Sub(m.history[1].at) >= time.Minute {
		m.history = m.history[1:]
	}
}

func (m Model) key(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	// Keys typed faster than the terminal is read come as one message.
	if k.Type == tea.KeyRunes && len(k.Runes) > 1 && !m.typing {
		var cmds []tea.Cmd
		var next tea.Model = m
		for _, r := range k.Runes {
			var cmd tea.Cmd
			next, cmd = next.(Model).key(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
			cmds = append(cmds, cmd)
		}
		return next, tea.Sequence(cmds...)
	}
	if m.typing {
		switch k.Type {
		case tea.KeyEnter:
			m.filter.Address, m.typing = strings.TrimSpace(m.input), false
			m.selected = 0
		case tea.KeyEsc:
			m.typing = false
		case tea.KeyBackspace:
			if m.input != "" {
				m.input = m.input[:len(m.input)-1]
			}
		case tea.KeyRunes:
			m.input += string(k.Runes)
		case tea.KeyCtrlC:
			return m, tea.Quit
		}
		return m, nil
	}
	switch k.String() {
	case "q", "ctrl+c":
		return m, tea.Quit
	case "?", "h":
		m.help = !m.help
	case "esc":
		m.help, m.why, m.whyErr = false, nil, nil
	case "p", " ":
		m.paused = !m.paused
	case "s":
		m.sort = (m.sort + 1) % sorts
	case "o":
		m.filter.Origin = nextOrigin(m.filter.Origin)
		m.selected = 0
	case "/":
		m.typing, m.input = true, m.filter.Address
	case "up", "k":
		m.selected = max(m.selected-1, 0)
	case "down", "j":
		m.selected = min(m.selected+1, max(len(m.rows())-1, 0))
	case "w":
		if m.why != nil {
			m.why, m.whyErr = nil, nil
			return m, nil
		}
		rows := m.rows()
		if m.selected < len(rows) && rows[m.selected].Prefix.IsValid() {
			return m, m.askWhy(rows[m.selected].Prefix.Addr())
		}
	}
	return m, nil
}

func nextOrigin(cur string) string {
	for i, o := range originKinds {
		if o == cur {
			return originKinds[(i+1)%len(originKinds)]
		}
	}
	return ""
}

func (m Model) askWhy(a netip.Addr) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
		defer cancel()
		why, err := m.api.Why(ctx, a)
		return whyMsg{why, err}
	}
}

// rows are the sources as shown: filtered and sorted.
func (m Model) rows() []Row {
	if len(m.history) == 0 {
		return nil
	}
	last := m.history[len(m.history)-1]
	var prev *sample
	if len(m.history) > 1 {
		prev = &m.history[len(m.history)-2]
	}
	rows := filterRows(rowsOf(prev, last), m.filter)
	sortRows(rows, m.sort)
	return rows
}
