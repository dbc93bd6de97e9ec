package main

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/hbf-firewall/hbf/internal/policy"
)

// durationValue is a flag taking a Go duration ("90s", "1h") or plain
// seconds ("90"), as the HBF_* variables of earlier tools did.
type durationValue struct{ d *time.Duration }

func (v durationValue) String() string { return v.d.String() }
func (v durationValue) Type() string   { return "duration" }
func (v durationValue) Set(s string) error {
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		*v.d = time.Duration(secs * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is neither a duration (90s, 1h) nor seconds", s)
	}
	*v.d = d
	return nil
}

// prefixesValue collects IPs and CIDRs, repeatable or comma-separated.
type prefixesValue struct{ p *[]netip.Prefix }

func (v prefixesValue) String() string {
	s := make([]string, len(*v.p))
	for i, p := range *v.p {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
func (v prefixesValue) Type() string { return "CIDR" }
func (v prefixesValue) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		p, err := policy.ParsePrefix(strings.TrimSpace(part))
		if err != nil {
			return err
		}
		*v.p = append(*v.p, p)
	}
	return nil
}

// applyEnv gives every flag the operator did not set the value of its
// environment variable, so flags beat the environment. Errors name the
// variable.
func applyEnv(fs *pflag.FlagSet, getenv func(string) string, names map[string]string) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		env, ok := names[f.Name]
		if !ok || f.Changed || err != nil {
			return
		}
		val := getenv(env)
		if val == "" {
			return
		}
		if e := fs.Set(f.Name, val); e != nil {
			err = fmt.Errorf("%s=%s: %w", env, val, e)
		}
	})
	return err
}
