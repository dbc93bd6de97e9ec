package fleet

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Admin writes the fleet-wide decisions, under admin/: it needs the
// fleet's admin credential, which etcd's roles give no node. Its decisions
// are rare: each one connects afresh, so none waits on a connection that
// backs off after an outage.
type Admin struct {
	cfg AdminConfig
	now func() time.Time
}

// AdminConfig is the admin credential and where etcd is.
type AdminConfig struct {
	Endpoints []string
	Layout    Layout
	TLS       *tls.Config
	Username  string
	Password  string
}

// NewAdmin returns a writer of fleet-wide decisions.
func NewAdmin(cfg AdminConfig) *Admin { return &Admin{cfg: cfg, now: time.Now} }

// do runs one operation on a connection of its own.
func (a *Admin) do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: a.cfg.Endpoints, DialTimeout: opTimeout, TLS: a.cfg.TLS,
		Username: a.cfg.Username, Password: a.cfg.Password, Logger: zap.NewNop()})
	if err != nil {
		return clientv3.OpResponse{}, err
	}
	defer cli.Close()
	c, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	return cli.Do(c, op)
}

func (a *Admin) put(ctx context.Context, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := a.do(ctx, clientv3.OpPut(key, string(data))); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}

// Allow puts p on the fleet's allowlist.
func (a *Admin) Allow(ctx context.Context, allow Allow) error {
	allow.Version = Version
	return a.put(ctx, a.cfg.Layout.AdminAllow(allow.Prefix), allow)
}

// Disallow takes p off the fleet's allowlist; false when it was not there.
func (a *Admin) Disallow(ctx context.Context, p netip.Prefix) (bool, error) {
	key := a.cfg.Layout.AdminAllow(p)
	resp, err := a.do(ctx, clientv3.OpDelete(key))
	if err != nil {
		return false, fmt.Errorf("delete %s: %w", key, err)
	}
	return resp.Del().Deleted > 0, nil
}

// Unblock ends every node's block of p made until now.
func (a *Admin) Unblock(ctx context.Context, p netip.Prefix, by string) error {
	return a.put(ctx, a.cfg.Layout.AdminUnblock(p), Unblock{Version: Version, Prefix: p, By: by, At: a.now()})
}
