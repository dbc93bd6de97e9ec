package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/hbf-firewall/hbf/internal/api"
)

// service answers the API.
type service struct {
	d      *daemon
	cancel context.CancelCauseFunc
}

func (s *service) Block(_ context.Context, c api.Caller, req api.ChangeRequest) []api.Result {
	if req.Fleet {
		if err := s.d.canShare(); err != nil {
			return s.d.refuseAll(c, "block", req, err)
		}
	}
	return s.d.state.Block(c, req.Targets, req.For, req.Reason, req.Fleet)
}

func (s *service) Unblock(ctx context.Context, c api.Caller, req api.ChangeRequest) []api.Result {
	if req.Fleet {
		return s.d.fleetChange(ctx, c, "unblock", req)
	}
	return s.d.state.Unblock(c, req.Targets, req.All)
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
