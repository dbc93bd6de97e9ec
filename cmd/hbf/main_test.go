package main

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/hbf-firewall/hbf/internal/daemon"
	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/report"
)

// runCLI runs hbf with a fake environment and captures the daemon config
// instead of running it.
func runCLI(args []string, vars map[string]string) (int, daemon.Config, string) {
	var got daemon.Config
	var stderr bytes.Buffer
	e := env{
		getenv: func(k string) string {
			if v, ok := vars[k]; ok {
				return v
			}
			if k == "HBF_CONFIG" {
				return os.DevNull // not the machine's /etc/hbf/hbf.yaml
			}
			return ""
		},
		stdout: &bytes.Buffer{},
		stderr: &stderr,
		runDaemon: func(_ context.Context, c daemon.Config) error {
			got = c
			return nil
		},
	}
	code := run(context.Background(), args, e)
	return code, got, stderr.String()
}

func TestDaemonFlagsAndEnvironment(t *testing.T) {
	code, cfg, stderr := runCLI(
		[]string{"daemon", "--iface", "lo", "--max-ports", "5", "--window", "30", "--allow", "192.0.2.0/24,2001:db8::1"},
		map[string]string{
			"HBF_MAX_PORTS":           "9",  // the flag wins
			"HBF_TIME_THRESHOLD":      "90", // the flag wins
			"HBF_TIMEOUT_SECONDS":     "120",
			"HBF_BLOCKLIST_FILE_PATH": "/etc/hbf/blocklist.txt",
			"HBF_BLOCK_DURATION":      "2h",
			"HBF_LOG_FORMAT":          "json",
			"HBF_IGNORE_PORTS":        "80,443,8000-8002,53/udp",
			"HBF_UDP_SCANS":           "report",
			"HBF_COUNT_PORTS":         "closed",
			"HBF_MODE":                "monitor",
			"SSH_CONNECTION":          "198.51.100.7 50000 192.0.2.1 22",
		})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := daemon.Defaults
	want.Start.Ifaces = []string{"lo"}
	want.Settings.MaxPorts = 5
	want.Settings.Window = 30 * time.Second
	want.Start.Timeout = 2 * time.Minute
	want.Settings.BlockDuration = 2 * time.Hour
	want.Settings.Blocklists = []string{"/etc/hbf/blocklist.txt"}
	want.Start.LogFormat = report.JSON
	want.Settings.Allow = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::1/128")}
	want.Start.SSHConnection = "198.51.100.7 50000 192.0.2.1 22"
	if cfg.Settings.IgnorePorts.String() != "80,443,8000-8002,53/udp" || !cfg.Settings.Monitor {
		t.Errorf("ignore ports %v, monitor %v", cfg.Settings.IgnorePorts, cfg.Settings.Monitor)
	}
	if cfg.Settings.UDPScans != dataplane.UDPReport || !cfg.Settings.CountClosed {
		t.Errorf("udp scans %q, count closed %v", cfg.Settings.UDPScans, cfg.Settings.CountClosed)
	}
	if !slices.Equal(cfg.Start.Ifaces, want.Start.Ifaces) || cfg.Settings.MaxPorts != want.Settings.MaxPorts || cfg.Settings.Window != want.Settings.Window ||
		cfg.Start.Timeout != want.Start.Timeout || cfg.Settings.BlockDuration != want.Settings.BlockDuration || !slices.Equal(cfg.Settings.Blocklists, want.Settings.Blocklists) ||
		cfg.Start.LogFormat != want.Start.LogFormat || !slices.Equal(cfg.Settings.Allow, want.Settings.Allow) || cfg.Start.SSHConnection != want.Start.SSHConnection ||
		cfg.Start.XDPMode != dataplane.XDPAuto || cfg.Start.PinPath != want.Start.PinPath || cfg.Start.MetricsAddr != want.Start.MetricsAddr {
		t.Errorf("config\n got %+v\nwant %+v", cfg, want)
	}
}

func TestDaemonRefusesNonsense(t *testing.T) {
	for _, tc := range []struct {
		args []string
		vars map[string]string
		want string
	}{
		{[]string{"daemon", "--iface", "lo", "--max-ports", "0"}, nil, "--max-ports 0: must be between 1 and 32"},
		{[]string{"daemon", "--iface", "lo", "--max-ports", "33"}, nil, "--max-ports 33: must be between 1 and 32"},
		{[]string{"daemon", "--iface", "lo", "--window", "-5s"}, nil, "--window -5s: must be between 1ms and 24h"},
		{[]string{"daemon", "--iface", "lo", "--window", "soon"}, nil, `"soon" is neither a duration`},
		{[]string{"daemon", "--iface", "lo", "--allow", "10.0.0.300"}, nil, `"10.0.0.300" is not an IP or CIDR`},
		{[]string{"daemon", "--iface", "lo", "--allow", "10.0.0.5/8"}, nil, `has host bits set`},
		{[]string{"daemon", "--iface", "lo", "--xdp-mode", "turbo"}, nil, `--xdp-mode: "turbo" is not an XDP mode`},
		{[]string{"daemon", "--iface", "lo", "--log-format", "xml"}, nil, `--log-format: "xml" is not a log format`},
		{[]string{"daemon", "--iface", "lo", "--udp-scans", "drop"}, nil, `--udp-scans "drop": must be block, report`},
		{[]string{"daemon", "--iface", "lo", "--count-ports", "open"}, nil, `--count-ports "open": must be all`},
		{[]string{"daemon", "--iface", "lo", "--ignore-ports", "53/sctp"}, nil, `"53/sctp": "sctp" is not a protocol: tcp or udp`},
		{[]string{"daemon", "--iface", "lo", "--ignore-ports", "90-80/udp"}, nil, `"90-80/udp" is not a port (1-65535) or a range`},
		{[]string{"daemon", "--iface", "lo"}, map[string]string{"HBF_MAX_PORTS": "many"}, `HBF_MAX_PORTS=many:`},
		{[]string{"daemon", "--iface", "lo"}, map[string]string{"HBF_TIMEOUT_SECONDS": "-1"}, `--timeout -1s: must not be negative`},
		{[]string{"daemon", "--no-such-flag"}, nil, "unknown flag: --no-such-flag"},
		{[]string{"daemon", "--iface", "lo", "--ignore-ports", "80,http"}, nil, `"http" is not a port`},
		{[]string{"daemon", "--iface", "lo", "--ignore-ports", "90-80"}, nil, `"90-80" is not a port`},
		{[]string{"daemon", "--iface", "lo", "--mode", "watch"}, nil, `--mode: "watch" is not a mode`},
		{[]string{"daemon", "--iface", "lo", "--log-connections", "some"}, nil, `--log-connections "some"`},
	} {
		code, _, stderr := runCLI(tc.args, tc.vars)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v %v: exit %d, stderr %q; want exit 2 saying %q", tc.args, tc.vars, code, stderr, tc.want)
		}
	}
}

// Every flag of the daemon is named in its help with the variable that sets
// it, so the two cannot drift apart.
func TestEveryDaemonFlagNamesItsVariable(t *testing.T) {
	cmd := newDaemonCmd(env{getenv: func(string) string { return "" }})
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" && !strings.Contains(f.Usage, "["+envName(f.Name)+"]") {
			t.Errorf("--%s: usage does not name %s", f.Name, envName(f.Name))
		}
	})
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Flag beats environment beats file beats default.
func TestConfigFilePrecedence(t *testing.T) {
	conf := writeFile(t, "hbf.yaml", `
iface: [eth1, eth2]
max-ports: 7
window: 30s
block-duration: 2h
mode: monitor
ignore-ports: [80, 443]
allow:
  - 192.0.2.0/24
  - 2001:db8::/64
`)
	code, cfg, stderr := runCLI([]string{"daemon", "--config", conf, "--max-ports", "5"},
		map[string]string{"HBF_TIME_THRESHOLD": "45", "HBF_MAX_PORTS": "9"})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if cfg.Settings.MaxPorts != 5 || cfg.Settings.Window != 45*time.Second || cfg.Settings.BlockDuration != 2*time.Hour || !cfg.Settings.Monitor ||
		!slices.Equal(cfg.Start.Ifaces, []string{"eth1", "eth2"}) || cfg.Settings.IgnorePorts.String() != "80,443" ||
		len(cfg.Settings.Allow) != 2 || cfg.Settings.ConfigFile != conf || cfg.Start.MetricsAddr != daemon.Defaults.Start.MetricsAddr {
		t.Errorf("config %+v", cfg)
	}
	// The reload rebuilds it from the same arguments, the file read again.
	os.WriteFile(conf, []byte("iface: eth1\nmax-ports: 7\nwindow: 10s\n"), 0o600)
	again, err := cfg.Deps.Reload()
	if err != nil || again.Settings.MaxPorts != 5 || again.Settings.Window != 45*time.Second || again.Settings.Monitor {
		t.Errorf("reload: %+v, %v", again, err)
	}
}

func TestConfigFileErrorsNameFileLineAndKey(t *testing.T) {
	for content, want := range map[string]string{
		"iface: eth0\nmaxports: 3\n":         `line 2: "maxports" is not a setting`,
		"iface: eth0\nmax-ports: many\n":     `line 2: max-ports: invalid argument "many"`,
		"iface: eth0\nallow: [10.0.0.300]\n": `line 2: allow: invalid argument "10.0.0.300" for "--allow" flag: "10.0.0.300" is not an IP or CIDR`,
		"iface: eth0\nmax-ports: 0\n":        `--max-ports 0: must be between 1 and 32`,
		"- just\n- a list\n":                 `line 1: want settings as key: value`,
		"iface: {a: b}\n":                    `line 1: iface: a value or a list of values`,
	} {
		conf := writeFile(t, "hbf.yaml", content)
		code, _, stderr := runCLI([]string{"daemon", "--config", conf}, nil)
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("%q: exit %d, %q; want exit 2 saying %q", content, code, stderr, want)
		}
	}
}

func TestConfigCheck(t *testing.T) {
	list := writeFile(t, "list.txt", "192.0.2.7\n")
	good := writeFile(t, "good.yaml", "max-ports: 5\nblocklist: ["+list+"]\n")
	var out bytes.Buffer
	code := run(context.Background(), []string{"config", "check", good}, env{getenv: os.Getenv, stdout: &out, stderr: &out})
	if code != 0 || !strings.Contains(out.String(), good+": ok") {
		t.Errorf("good config: exit %d, %s", code, out.String())
	}
	badList := writeFile(t, "bad.txt", "192.0.2.7\n10.0.0.300\n")
	bad := writeFile(t, "bad.yaml", "blocklist: "+badList+"\n")
	out.Reset()
	code = run(context.Background(), []string{"config", "check", bad}, env{getenv: os.Getenv, stdout: &out, stderr: &out})
	if code != 1 || !strings.Contains(out.String(), badList+` line 2: "10.0.0.300" is not an IP or CIDR`) {
		t.Errorf("bad list: exit %d, %s", code, out.String())
	}
}

// The example in the repository is a valid configuration (but for the
// blocklist it names, which exists on a real host only).
func TestExampleConfigChecks(t *testing.T) {
	data, err := os.ReadFile("../../examples/hbf.yaml")
	if err != nil {
		t.Fatal(err)
	}
	list := writeFile(t, "blocklist.txt", "192.0.2.7\n")
	conf := writeFile(t, "hbf.yaml", strings.ReplaceAll(string(data), "/etc/hbf/blocklist.txt", list))
	var out bytes.Buffer
	if code := run(context.Background(), []string{"config", "check", conf}, env{getenv: os.Getenv, stdout: &out, stderr: &out}); code != 0 {
		t.Errorf("the example does not check: %s", out.String())
	}
}

// The command line is parsed once; a reload builds the configuration from
// its values again, with the environment and the file read anew, and gets
// what the start got when neither changed.
func TestReloadRebuildsWhatTheCommandLineSaid(t *testing.T) {
	list := writeFile(t, "list.txt", "192.0.2.7\n")
	conf := writeFile(t, "hbf.yaml", "feed-refresh: 2h\n")
	code, cfg, stderr := runCLI([]string{"daemon", "--config", conf, "--iface", "lo", "--iface", "eth7",
		"--max-ports", "5", "--window", "0.5", "--ignore-ports", "80,8000-8002", "--mode", "monitor",
		"--block-duration", "0", "--escalation", "48h,0", "--escalation-forget", "240h", "--allow", "192.0.2.0/24,2001:db8::1",
		"--blocklist", list, "--blocklist-url", "https://feeds.example/drop.txt", "--log-connections", "rate=5/s",
		"--socket", "/run/hbf-test/hbf.sock", "--replace", "--detach-on-exit", "--min-prefix-v4", "16",
		"--scan-blocks-per-minute", "7", "--scan-prefix-v6", "56", "--xdp-mode", "generic", "--log-format", "json"},
		map[string]string{"HBF_TIMEOUT_SECONDS": "30"})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if cfg.Start.Socket != "/run/hbf-test/hbf.sock" || cfg.Settings.Window != 500*time.Millisecond || cfg.Start.Timeout != 30*time.Second ||
		cfg.Settings.FeedRefresh != 2*time.Hour || len(cfg.Settings.Escalation.After) != 2 {
		t.Errorf("start: %+v", cfg)
	}
	again, err := cfg.Deps.Reload()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again.Start, cfg.Start) || !reflect.DeepEqual(again.Settings, cfg.Settings) {
		t.Errorf("the reload built\n%+v\n%+v\nthe start\n%+v\n%+v", again.Start, again.Settings, cfg.Start, cfg.Settings)
	}
}
