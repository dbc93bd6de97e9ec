package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// httpServer serves /healthz, /readyz and /metrics from the moment the
// daemon binds its address: /healthz says the process lives, /readyz says
// whether hbf protects its interfaces (503 with the reason until it does,
// and again while stopping), /metrics answers once the program is loaded.
type httpServer struct {
	srv *http.Server

	mu       sync.Mutex
	notReady string // "" when ready
	metrics  http.Handler
}

func serveHTTP(ln net.Listener, log *slog.Logger) *httpServer {
	h := &httpServer{notReady: "starting"}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		h.mu.Lock()
		why := h.notReady
		h.mu.Unlock()
		if why != "" {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		m := h.metrics
		h.mu.Unlock()
		if m == nil {
			http.Error(w, "starting: the program is not loaded yet", http.StatusServiceUnavailable)
			return
		}
		m.ServeHTTP(w, r)
	})
	h.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := h.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	return h
}

func (h *httpServer) setMetrics(m http.Handler) {
	h.mu.Lock()
	h.metrics = m
	h.mu.Unlock()
}

// setReady marks hbf ready, or not ready for a reason.
func (h *httpServer) setReady(notReady string) {
	h.mu.Lock()
	h.notReady = notReady
	h.mu.Unlock()
}

func (h *httpServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = h.srv.Shutdown(ctx)
}
