package daemon

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/decision"
	"github.com/hbf-firewall/hbf/internal/policy"
	"github.com/hbf-firewall/hbf/internal/sources"
)

// explain adds to an error of the packages below the daemon the setting an
// operator changes for it.
func explain(err error) error {
	if wide, ok := errors.AsType[*policy.TooWideError](err); ok && wide.MinBits > 0 {
		v := "4"
		if wide.Prefix.Addr().Is6() {
			v = "6"
		}
		return fmt.Errorf("%w (--min-prefix-v%s)", err, v)
	}
	if ce, ok := errors.AsType[*dataplane.CapacityError](err); ok {
		flag := "--max-blocks"
		if ce.Prefixes {
			flag = "--max-block-prefixes"
		}
		return fmt.Errorf("%s holds %d entries, more than %s %d: raise %s to %d or more, or unblock first",
			ce.Path, ce.Entries, flag, ce.Capacity, flag, ce.Entries)
	}
	if big, ok := errors.AsType[*decision.ListsTooBigError](err); ok && big.Setting == "" {
		named := *big
		named.Setting = "--max-blocks"
		if big.Prefixes {
			named.Setting = "--max-block-prefixes"
		}
		return &named
	}
	return err
}

func specsOf(set Settings) []sources.Spec {
	var out []sources.Spec
	for _, p := range set.Blocklists {
		out = append(out, sources.Spec{Where: p})
	}
	for _, u := range set.BlocklistURLs {
		out = append(out, sources.Spec{Where: u, Feed: true})
	}
	return out
}

// loader reads lists with check, the policy for their entries.
func (d *daemon) loader(check func(netip.Prefix) error) sources.Loader {
	return sources.NewLoader(d.start.StateDir, d.deps.Version, d.st, check, d.log)
}

// listsRead is what reading the lists at start found.
type listsRead struct {
	lists      []*sources.Source
	saveCopies []func() // keep the last good copies; not on the way to protection
	err        error
}

// readAll reads every list at start. A list that does not parse is
// replaced by its last good copy when hbf has one, with a warning; a list
// hbf has never loaded that does not parse stops the start, before anything
// is attached. A feed hbf cannot reach starts empty, degraded, and is
// fetched again at the next refresh.
func readAll(l sources.Loader, specs []sources.Spec) listsRead {
	var out listsRead
	for _, spec := range specs {
		src, save, err := l.Load(spec, nil)
		if err != nil {
			flag := "--blocklist"
			if spec.Feed {
				flag = "--blocklist-url"
			}
			return listsRead{err: fmt.Errorf("%s %w", flag, err)}
		}
		out.lists = append(out.lists, src)
		if save != nil {
			out.saveCopies = append(out.saveCopies, save)
		}
	}
	return out
}

// CheckLists reads every list file a configuration names, for hbf config
// check: a list that does not read or parse is an error naming file, line
// and value. Feeds are not fetched.
func CheckLists(set Settings) error {
	var errs []error
	for _, path := range set.Blocklists {
		if _, err := sources.ReadFile(path, nil); err != nil {
			errs = append(errs, fmt.Errorf("blocklist %w", err))
		}
	}
	return errors.Join(errs...)
}
