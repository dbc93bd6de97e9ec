package decision

import (
	"fmt"
	"maps"
	"slices"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/report"
	"github.com/hbf-firewall/hbf/internal/store"
)

// UnblockAs ends origin's blocks of each target, or every block of
// origin's with all. The blocks of other origins stay: a fail2ban jail's
// unban must not end what the scan detector, an operator or another jail
// blocked.
func (e *Engine) UnblockAs(c api.Caller, origin store.Origin, targets []string, all bool) []api.Result {
	if all {
		e.mu.Lock()
		targets = nil
		for p, recs := range e.blocks {
			if _, ok := recs[origin]; ok {
				targets = append(targets, p.String())
			}
		}
		e.mu.Unlock()
		slices.Sort(targets)
	}
	return e.each(c, "unblock", targets, 0, "", func(t string) api.Result { return e.unblockAs(c, origin, t) })
}

func (e *Engine) unblockAs(c api.Caller, origin store.Origin, target string) api.Result {
	res := api.Result{Target: target}
	p, ok := ParseTarget(&res, 0, nil)
	if !ok {
		return res
	}
	if _, ok := e.blocks[p][origin]; !ok {
		res.Error = fmt.Sprintf("%s is not blocked by %s", p, origin)
		return res
	}
	after := maps.Clone(e.blocks[p])
	delete(after, origin)
	if err := e.commit(e.blocksEdit("unblock", p, after)); err != nil {
		res.Error = err.Error()
		return res
	}
	now := e.now()
	e.history(store.Change{Time: now, Action: "unblock", Prefix: p, Origin: origin, By: c.String()})
	if len(after) == 0 && e.listHolding(p) == "" { // else it is still blocked, and says so
		e.publish(&report.Unblock{Time: now, Prefix: p, By: c.String()})
	}
	res.OK = true
	return res
}
