package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Caller is who sent a request, from the socket's peer credentials.
type Caller struct {
	UID int
	PID int
}

func (c Caller) String() string { return "uid " + strconv.Itoa(c.UID) }

// Service is what the daemon does for the API.
type Service interface {
	Block(ctx context.Context, c Caller, req ChangeRequest) []Result
	Unblock(ctx context.Context, c Caller, req ChangeRequest) []Result
	Allow(ctx context.Context, c Caller, req ChangeRequest) []Result
	Disallow(ctx context.Context, c Caller, req ChangeRequest) []Result
	// Blocks calls fn for every block: lists may hold a million.
	Blocks(ctx context.Context, fn func(Block) error) error
	Allows(ctx context.Context) ([]Allow, error)
	Why(ctx context.Context, addr netip.Addr) (Why, error)
	Status(ctx context.Context) (Status, error)
	// Top is the busiest sources the kernel drops, at most n; asking for
	// it has the kernel note busy blocks for a while (hbf top).
	Top(ctx context.Context, n int) (Top, error)
	// Fleet is this host's view of its fleet; ErrNoFleet outside one.
	Fleet(ctx context.Context) (FleetStatus, error)
	// Events calls fn with the recent events, then, when follow is set,
	// with each new one until ctx ends. Events are JSON lines.
	Events(ctx context.Context, follow bool, fn func(json.RawMessage) error) error
	// Reload re-reads the configuration and the lists.
	Reload(ctx context.Context, c Caller) error
	// SetMode switches to "enforce" or "monitor".
	SetMode(ctx context.Context, c Caller, mode string) error
	Stop(ctx context.Context, c Caller) error
	Uninstall(ctx context.Context, c Caller) error
}

const maxBody = 1 << 20 // a request names targets, not a blocklist

type callerKey struct{}

// Listen opens the socket so that only root may use it: it is created
// 0600 (the umask is narrowed around bind, so it never exists with wider
// permissions), in a folder hbf creates 0700 when it is missing.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// A socket left by a daemon that died: nobody answers on it.
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: another hbf daemon answers there", path)
	}
	_ = os.Remove(path)
	old := unix.Umask(0o177)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ln, nil
}

// Timeouts bound how long a client may hold a connection without making
// progress: a slow or stalled client is cut off, and never keeps a
// goroutine, a buffer or a lock of the daemon's.
type Timeouts struct {
	Header time.Duration // to send the request's header
	Read   time.Duration // to send the whole request, body included
	Write  time.Duration // for each write of the answer to be taken; streams renew it
	Idle   time.Duration // between requests on one connection
}

// DefaultTimeouts are generous for the CLI, which sends small requests and
// reads at once.
var DefaultTimeouts = Timeouts{Header: 5 * time.Second, Read: 10 * time.Second, Write: 30 * time.Second, Idle: 30 * time.Second}

// Serve answers API requests on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, svc Service, to Timeouts) error {
	srv := &http.Server{
		Handler:           handler(svc, to.Write),
		ReadHeaderTimeout: to.Header,
		ReadTimeout:       to.Read,
		IdleTimeout:       to.Idle,
		MaxHeaderBytes:    64 << 10,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, callerKey{}, peer(c))
		},
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// peer reads the credentials of the process at the other end of c; a caller
// whose credentials cannot be read is treated as nobody.
func peer(c net.Conn) Caller {
	nobody := Caller{UID: 65534}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nobody
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nobody
	}
	var cred *unix.Ucred
	var cerr error
	err = raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil || cerr != nil {
		return nobody
	}
	return Caller{UID: int(cred.Uid), PID: int(cred.Pid)}
}

// Handler routes the API. Only root may use it: the socket's mode keeps
// others out, and the peer's uid is checked again here.
func Handler(svc Service) http.Handler { return handler(svc, DefaultTimeouts.Write) }

func handler(svc Service, writeTimeout time.Duration) http.Handler {
	mux := http.NewServeMux()
	// A client that stops reading makes a write block: the deadline, renewed
	// before each write of a stream, ends the request instead.
	renew := func(w http.ResponseWriter) {
		if writeTimeout > 0 {
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(writeTimeout))
		}
	}
	rootOnly := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if c := caller(r); c.UID != 0 {
				httpError(w, http.StatusForbidden, fmt.Errorf("permission denied: hbf's socket is root-only (caller %s)", c))
				return
			}
			next.ServeHTTP(w, r)
		})
	}

	change := func(do func(context.Context, Caller, ChangeRequest) []Result) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var req ChangeRequest
			dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil {
				httpError(w, http.StatusBadRequest, fmt.Errorf("request body: %w", err))
				return
			}
			writeJSON(w, do(r.Context(), caller(r), req))
		}
	}
	mux.HandleFunc("POST /v1/block", change(svc.Block))
	mux.HandleFunc("POST /v1/unblock", change(svc.Unblock))
	mux.HandleFunc("POST /v1/allow", change(svc.Allow))
	mux.HandleFunc("POST /v1/disallow", change(svc.Disallow))
	mux.HandleFunc("GET /v1/blocks", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		// A JSON array written entry by entry: never the whole list in memory.
		enc := json.NewEncoder(w)
		renew(w)
		io.WriteString(w, "[")
		first := true
		n := 0
		err := svc.Blocks(r.Context(), func(b Block) error {
			if n++; n%1024 == 0 {
				renew(w)
			}
			if !first {
				io.WriteString(w, ",")
			}
			first = false
			return enc.Encode(b)
		})
		io.WriteString(w, "]")
		if err != nil {
			// The status is sent; an invalid array tells the client.
			io.WriteString(w, "\nerror: "+err.Error())
		}
	})
	mux.HandleFunc("GET /v1/allows", func(w http.ResponseWriter, r *http.Request) {
		allows, err := svc.Allows(r.Context())
		if err != nil {
			httpError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, allows)
	})
	mux.HandleFunc("GET /v1/why", func(w http.ResponseWriter, r *http.Request) {
		addr, err := netip.ParseAddr(r.URL.Query().Get("addr"))
		if err != nil {
			httpError(w, http.StatusBadRequest, fmt.Errorf("%q is not an IP address", r.URL.Query().Get("addr")))
			return
		}
		why, err := svc.Why(r.Context(), addr.Unmap())
		if err != nil {
			httpError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, why)
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := svc.Status(r.Context())
		if err != nil {
			httpError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, st)
	})
	mux.HandleFunc("GET /v1/top", func(w http.ResponseWriter, r *http.Request) {
		n := DefaultTopSources
		if v := r.URL.Query().Get("n"); v != "" {
			var err error
			if n, err = strconv.Atoi(v); err != nil || n < 1 || n > MaxTopSources {
				httpError(w, http.StatusBadRequest, fmt.Errorf("n=%q: ask for 1 to %d sources", v, MaxTopSources))
				return
			}
		}
		top, err := svc.Top(r.Context(), n)
		if err != nil {
			httpError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, top)
	})
	mux.HandleFunc("GET /v1/fleet", func(w http.ResponseWriter, r *http.Request) {
		st, err := svc.Fleet(r.Context())
		if errors.Is(err, ErrNoFleet) {
			httpError(w, http.StatusNotFound, err)
			return
		}
		if err != nil {
			httpError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, st)
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		follow := r.URL.Query().Get("follow") == "true"
		w.Header().Set("Content-Type", "application/x-ndjson")
		flusher, _ := w.(http.Flusher)
		_ = svc.Events(r.Context(), follow, func(line json.RawMessage) error {
			renew(w)
			if _, err := w.Write(append(line, '\n')); err != nil {
				return err
			}
			if flusher != nil {
				flusher.Flush()
			}
			return nil
		})
	})
	mux.HandleFunc("POST /v1/mode", func(w http.ResponseWriter, r *http.Request) {
		var req ModeRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&req); err != nil {
			httpError(w, http.StatusBadRequest, fmt.Errorf("request body: %w", err))
			return
		}
		if err := svc.SetMode(r.Context(), caller(r), req.Mode); err != nil {
			httpError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, struct{}{})
	})
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := svc.Reload(r.Context(), caller(r)); err != nil {
			httpError(w, http.StatusConflict, err)
			return
		}
		writeJSON(w, struct{}{})
	})
	mux.HandleFunc("POST /v1/stop", func(w http.ResponseWriter, r *http.Request) {
		if err := svc.Stop(r.Context(), caller(r)); err != nil {
			httpError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, struct{}{})
	})
	mux.HandleFunc("POST /v1/uninstall", func(w http.ResponseWriter, r *http.Request) {
		if err := svc.Uninstall(r.Context(), caller(r)); err != nil {
			httpError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, struct{}{})
	})
	return rootOnly(mux)
}

func caller(r *http.Request) Caller {
	if c, ok := r.Context().Value(callerKey{}).(Caller); ok {
		return c
	}
	return Caller{UID: 65534}
}

type errorBody struct {
	Error string `json:"error"`
}

func httpError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(errorBody{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
