package main

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/hbf-firewall/hbf/internal/limit"
	"github.com/hbf-firewall/hbf/internal/policy"
	"github.com/hbf-firewall/hbf/internal/ports"
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

// limitsValue collects connection limits, repeatable or comma-separated:
// "22/tcp=6/30s,5060/udp=50/10s".
type limitsValue struct{ l *[]limit.Limit }

func (v limitsValue) String() string {
	s := make([]string, len(*v.l))
	for i, l := range *v.l {
		s[i] = l.String()
	}
	return strings.Join(s, ",")
}
func (v limitsValue) Type() string { return "limit" }
func (v limitsValue) Set(s string) error {
	var items []string
	for _, l := range *v.l {
		items = append(items, l.String())
	}
	ls, err := limit.ParseList(append(items, strings.Split(s, ",")...))
	if err != nil {
		return err
	}
	*v.l = ls
	return nil
}

// scheduleValue is an escalation schedule: "24h,168h,0", or "none".
type scheduleValue struct{ d *[]time.Duration }

func (v scheduleValue) String() string { return policy.Escalation{After: *v.d}.String() }
func (v scheduleValue) Type() string   { return "durations" }
func (v scheduleValue) Set(s string) error {
	d, err := policy.ParseSchedule(s)
	if err != nil {
		return err
	}
	*v.d = d
	return nil
}

// portsValue collects ports and port ranges, each of both protocols or of
// one: "80,443,53/udp,8000-8100/tcp".
type portsValue struct{ l *ports.List }

func (v portsValue) String() string { return v.l.String() }
func (v portsValue) Type() string   { return "ports" }
func (v portsValue) Set(s string) error {
	l, err := ports.ParseList(s)
	if err != nil {
		return err
	}
	*v.l = append(*v.l, l...)
	return nil
}

// legacyEnv are the variables earlier tools used, kept by name.
var legacyEnv = map[string]string{
	"window":    "HBF_TIME_THRESHOLD",
	"timeout":   "HBF_TIMEOUT_SECONDS",
	"blocklist": "HBF_BLOCKLIST_FILE_PATH",
}

// envName is the variable that sets a flag: HBF_ and the flag's name in
// capitals (--max-ports: HBF_MAX_PORTS), but for the legacy names.
func envName(flag string) string {
	if name, ok := legacyEnv[flag]; ok {
		return name
	}
	return "HBF_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv gives every flag the operator did not set the value of its
// environment variable, so flags beat the environment. Errors name the
// variable.
func applyEnv(fs *pflag.FlagSet, getenv func(string) string) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || err != nil || f.Name == "help" {
			return
		}
		env := envName(f.Name)
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

// applyFile gives every setting neither a flag nor the environment set the
// value its key has in the YAML file at path. A key that is no setting, or a
// value its flag refuses, is an error naming the file, the line and the key.
func applyFile(fs *pflag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // an empty file sets nothing
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("%s line %d: want settings as key: value", path, root.Line)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		f := fs.Lookup(k.Value)
		if f == nil || k.Value == "config" || k.Value == "help" {
			return fmt.Errorf("%s line %d: %q is not a setting (see hbf daemon --help)", path, k.Line, k.Value)
		}
		var value string
		switch v.Kind {
		case yaml.ScalarNode:
			value = v.Value
		case yaml.SequenceNode:
			items := make([]string, len(v.Content))
			for j, item := range v.Content {
				if item.Kind != yaml.ScalarNode {
					return fmt.Errorf("%s line %d: %s: a list of plain values, please", path, item.Line, k.Value)
				}
				items[j] = item.Value
			}
			value = strings.Join(items, ",")
		default:
			return fmt.Errorf("%s line %d: %s: a value or a list of values, please", path, v.Line, k.Value)
		}
		if f.Changed {
			continue // a flag or the environment said otherwise
		}
		if err := fs.Set(k.Value, value); err != nil {
			return fmt.Errorf("%s line %d: %s: %w", path, v.Line, k.Value, err)
		}
	}
	return nil
}
