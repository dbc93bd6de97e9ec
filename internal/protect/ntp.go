package protect

import (
	"bufio"
	"io/fs"
	"net/netip"
	"path"
	"strings"
)

// TimeServer is a server the host's time daemon is configured with: a
// name or an address, and the file that names it.
type TimeServer struct {
	Host string
	File string // "/etc/chrony/chrony.conf"
}

// TimeServers reads the servers of the time daemons configured on the
// host whose root is fsys (os.DirFS("/")): chrony, ntpd (and NTPsec) and
// systemd-timesyncd. Fleet expiry and delays are absolute times, so the
// clock's sources must stay reachable whatever a spoofer sends. Files that
// are missing or do not read are skipped: a host runs one time daemon, if
// any.
func TimeServers(fsys fs.FS) []TimeServer {
	var out []TimeServer
	for _, f := range []string{"etc/chrony/chrony.conf", "etc/chrony.conf"} {
		out = append(out, chrony(fsys, f, 0)...)
	}
	for _, f := range []string{"etc/ntp.conf", "etc/ntpsec/ntp.conf"} {
		out = append(out, ntpd(fsys, f)...)
	}
	return append(out, timesyncd(fsys)...)
}

// NTP are the entries of the time servers' addresses, resolved.
func NTP(addrs []netip.Addr) []Entry {
	return Addrs(addrs, KindNTP, "an NTP server of this host's time daemon")
}

// Hosts are the servers' hosts.
func Hosts(servers []TimeServer) []string {
	out := make([]string, len(servers))
	for i, s := range servers {
		out[i] = s.Host
	}
	return out
}

// eachLine calls fn with the fields of each line of a file of fsys that
// is not a comment.
func eachLine(fsys fs.FS, name string, fn func(fields []string)) {
	f, err := fsys.Open(name)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#!;"); i >= 0 {
			line = line[:i]
		}
		if fields := strings.Fields(line); len(fields) > 0 {
			fn(fields)
		}
	}
}

// sourceDirective: the directives of chrony.conf and ntp.conf that name a
// time source.
func sourceDirective(fields []string) (string, bool) {
	switch fields[0] {
	case "server", "pool", "peer":
		if len(fields) > 1 {
			return fields[1], true
		}
	}
	return "", false
}

// chrony reads a chrony.conf: its sources, and those of the files its
// confdir, sourcedir and include directives name (depth bounds includes
// of includes).
func chrony(fsys fs.FS, name string, depth int) []TimeServer {
	var out []TimeServer
	eachLine(fsys, name, func(fields []string) {
		if host, ok := sourceDirective(fields); ok {
			out = append(out, TimeServer{Host: host, File: "/" + name})
			return
		}
		if len(fields) < 2 || depth > 2 {
			return
		}
		var pattern string
		switch fields[0] {
		case "confdir":
			pattern = path.Join(fields[1], "*.conf")
		case "sourcedir":
			pattern = path.Join(fields[1], "*.sources")
		case "include":
			pattern = fields[1]
		default:
			return
		}
		matches, _ := fs.Glob(fsys, strings.TrimPrefix(pattern, "/"))
		for _, m := range matches {
			out = append(out, chrony(fsys, m, depth+1)...)
		}
	})
	return out
}

func ntpd(fsys fs.FS, name string) []TimeServer {
	var out []TimeServer
	eachLine(fsys, name, func(fields []string) {
		if host, ok := sourceDirective(fields); ok {
			out = append(out, TimeServer{Host: host, File: "/" + name})
		}
	})
	return out
}

// timesyncd reads systemd-timesyncd's NTP= and FallbackNTP= from its file
// and drop-ins, later files overriding earlier ones, an empty value
// resetting the list. With no FallbackNTP= set, the commented one of its
// file is the default it was built with, as systemd's files show them.
func timesyncd(fsys fs.FS) []TimeServer {
	const main = "etc/systemd/timesyncd.conf"
	files := []string{main}
	for _, dir := range []string{"usr/lib/systemd/timesyncd.conf.d", "run/systemd/timesyncd.conf.d", "etc/systemd/timesyncd.conf.d"} {
		matches, _ := fs.Glob(fsys, dir+"/*.conf")
		files = append(files, matches...)
	}
	lists := map[string][]TimeServer{}
	set := map[string]bool{}
	var defaults []TimeServer
	for _, name := range files {
		f, err := fsys.Open(name)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if v, ok := strings.CutPrefix(line, "#FallbackNTP="); ok && name == main {
				for _, h := range strings.Fields(v) {
					defaults = append(defaults, TimeServer{Host: h, File: "/" + name})
				}
				continue
			}
			key, value, ok := strings.Cut(line, "=")
			key = strings.TrimSpace(key)
			if !ok || (key != "NTP" && key != "FallbackNTP") {
				continue
			}
			set[key] = true
			var servers []TimeServer
			for _, h := range strings.Fields(value) {
				servers = append(servers, TimeServer{Host: h, File: "/" + name})
			}
			if len(servers) == 0 {
				lists[key] = nil
			} else {
				lists[key] = append(lists[key], servers...)
			}
		}
		f.Close()
	}
	if !set["FallbackNTP"] {
		lists["FallbackNTP"] = defaults
	}
	return append(lists["NTP"], lists["FallbackNTP"]...)
}
