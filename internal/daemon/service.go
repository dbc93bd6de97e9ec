package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/store"
)

// service answers the API.
type service struct {
	d      *daemon
	cancel context.CancelCauseFunc
}

func (s *service) Block(_ context.Context, c api.Caller, req api.ChangeRequest) []api.Result {
	origin, err := store.ParseCallerOrigin(req.Origin)
	if err != nil {
		return s.refuse(c, "block", req, err)
	}
	if req.Fleet {
		if err := s.d.canShare(); err != nil {
			return s.d.refuseAll(c, "block", req, err)
		}
	}
	return s.d.state.BlockAs(c, origin, req.Targets, req.For, req.Reason, req.Fleet)
}

func (s *service) Unblock(ctx context.Context, c api.Caller, req api.ChangeRequest) []api.Result {
	switch {
	case req.Fleet && req.Origin != "":
		return s.refuse(c, "unblock", req, errors.New("--fleet ends every node's block of a prefix, whatever its origin: give --origin or --fleet"))
	case req.Fleet:
		return s.d.fleetChange(ctx, c, "unblock", req)
	case req.Origin != "":
		origin, err := store.ParseCallerOrigin(req.Origin)
		if err != nil {
			return s.refuse(c, "unblock", req, err)
		}
		return s.d.state.UnblockAs(c, origin, req.Targets, req.All)
	}
	return s.d.state.Unblock(c, req.Targets, req.All)
}

// refuse answers each target of req, or --all, with err, and audits it.
func (s *service) refuse(c api.Caller, action string, req api.ChangeRequest, err error) []api.Result {
	targets := req.Targets
	if req.All {
		targets = []string{"--all"}
	}
	out := make([]api.Result, 0, len(targets))
	for _, t := range targets {
		r := api.Result{Target: t, Error: err.Error()}
		s.d.audit.Write(c, action, t, r, req.For, req.Reason)
		out = append(out, r)
	}
	return out
}

func (s *service) Allow(ctx context.Context, c api.Caller, req api.ChangeRequest) []api.Result {
	if req.Fleet {
		return s.d.fleetChange(ctx, c, "allow", req)
	}
	return s.d.state.Allow(c, req.Targets, req.For, req.Reason)
}

func (s *service) Disallow(ctx context.Context, c api.Caller, req api.ChangeRequest) []api.Result {
	if req.Fleet {
		return s.d.fleetChange(ctx, c, "disallow", req)
	}
	return s.d.state.Disallow(c, req.Targets)
}

func (s *service) Fleet(context.Context) (api.FleetStatus, error) { return s.d.fleetStatus() }

func (s *service) Blocks(ctx context.Context, fn func(api.Block) error) error {
	return s.d.state.Blocks(ctx, fn)
}

func (s *service) Allows(context.Context) ([]api.Allow, error) { return s.d.state.Allows(), nil }

func (s *service) Why(_ context.Context, addr netip.Addr) (api.Why, error) {
	return s.d.state.Why(addr), nil
}

func (s *service) Events(ctx context.Context, follow bool, fn func(json.RawMessage) error) error {
	return s.d.hub.Events(ctx, follow, fn)
}

func (s *service) SetMode(_ context.Context, c api.Caller, mode string) error {
	monitor, err := ParseMode(mode)
	if err == nil {
		set := s.d.currentProgram()
		set.Monitor = monitor
		err = s.d.setProgram(set)
	}
	s.d.audit.Change(c, "mode", mode, err)
	if err != nil {
		return err
	}
	s.d.log.Info("mode changed", "mode", mode, "by", c.String())
	return nil
}

func (s *service) Reload(_ context.Context, c api.Caller) error {
	err := s.d.reload(c.String())
	s.d.audit.Change(c, "reload", "", err)
	return err
}

func (s *service) Stop(_ context.Context, c api.Caller) error {
	s.d.audit.Event(c, "stop")
	s.cancel(fmt.Errorf("hbf stop (%s)", c))
	return nil
}

func (s *service) Uninstall(_ context.Context, c api.Caller) error {
	s.d.audit.Event(c, "uninstall")
	s.cancel(fmt.Errorf("%w (%s)", errUninstall, c))
	return nil
}
