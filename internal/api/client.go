package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
)

// Client talks to the daemon.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client of the daemon listening on socket.
func NewClient(socket string) *Client {
	return &Client{socket: socket, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
	}}}
}

// ErrNoDaemon: nothing listens on the socket.
var ErrNoDaemon = errors.New("no hbf daemon")

func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://hbf"+path, r)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	switch {
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		return nil, errors.New("permission denied: hbf's socket is root-only")
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
		return nil, fmt.Errorf("%w at %s", ErrNoDaemon, c.socket)
	case err != nil:
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e errorBody
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("daemon answered %s", resp.Status)
	}
	return resp, nil
}

func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("daemon's answer: %w", err)
	}
	return nil
}

// Change sends a block, unblock, allow or disallow request.
func (c *Client) Change(ctx context.Context, verb string, req ChangeRequest) ([]Result, error) {
	var out []Result
	return out, c.call(ctx, http.MethodPost, "/v1/"+verb, req, &out)
}

// Blocks calls fn for every block, as the daemon streams them.
func (c *Client) Blocks(ctx context.Context, fn func(Block) error) error {
	resp, err := c.do(ctx, http.MethodGet, "/v1/blocks", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(bufio.NewReader(resp.Body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return fmt.Errorf("daemon's answer is not a list: %v", err)
	}
	for dec.More() {
		var b Block
		if err := dec.Decode(&b); err != nil {
			return fmt.Errorf("daemon's answer: %w", err)
		}
		if err := fn(b); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("the daemon's list was cut short: %w", err)
	}
	return nil
}

// Allows lists the allowlist.
func (c *Client) Allows(ctx context.Context) ([]Allow, error) {
	var out []Allow
	return out, c.call(ctx, http.MethodGet, "/v1/allows", nil, &out)
}

// Why explains what hbf does with addr.
func (c *Client) Why(ctx context.Context, addr netip.Addr) (Why, error) {
	var out Why
	return out, c.call(ctx, http.MethodGet, "/v1/why?addr="+url.QueryEscape(addr.String()), nil, &out)
}

// Status reads the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var out Status
	return out, c.call(ctx, http.MethodGet, "/v1/status", nil, &out)
}

// Top reads the busiest sources the kernel drops, at most n.
func (c *Client) Top(ctx context.Context, n int) (Top, error) {
	var out Top
	return out, c.call(ctx, http.MethodGet, fmt.Sprintf("/v1/top?n=%d", n), nil, &out)
}

// Fleet reads the daemon's view of its fleet.
func (c *Client) Fleet(ctx context.Context) (FleetStatus, error) {
	var out FleetStatus
	return out, c.call(ctx, http.MethodGet, "/v1/fleet", nil, &out)
}

// Events calls fn with each event line: the recent ones, then new ones
// until ctx ends when follow is set.
func (c *Client) Events(ctx context.Context, follow bool, fn func([]byte) error) error {
	resp, err := c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/events?follow=%t", follow), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if err := fn(sc.Bytes()); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return sc.Err()
}

// Reload has the daemon re-read its configuration and lists.
func (c *Client) Reload(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, "/v1/reload", nil, &struct{}{})
}

// SetMode switches the daemon to "enforce" or "monitor".
func (c *Client) SetMode(ctx context.Context, mode string) error {
	return c.call(ctx, http.MethodPost, "/v1/mode", ModeRequest{Mode: mode}, &struct{}{})
}

// Stop stops the daemon; enforcement stays.
func (c *Client) Stop(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, "/v1/stop", nil, &struct{}{})
}

// Uninstall stops the daemon and removes enforcement.
func (c *Client) Uninstall(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, "/v1/uninstall", nil, &struct{}{})
}
