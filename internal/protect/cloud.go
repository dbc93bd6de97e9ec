package protect

import (
	"io/fs"
	"net/netip"
	"strings"
)

// metadataAddrs are the addresses of the clouds' instance metadata
// services: IPv4's everywhere, IPv6's on EC2's Nitro instances.
var metadataAddrs = []netip.Addr{netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("fd00:ec2::254")}

// clouds are what the firmware of a cloud's instances names it (DMI), as
// cloud-init's ds-identify tells them apart.
var clouds = []struct {
	file, contains, name string
}{
	{"sys_vendor", "Amazon EC2", "Amazon EC2"},
	{"bios_version", "amazon", "Amazon EC2"},
	{"product_name", "Google Compute Engine", "Google Cloud"},
	{"chassis_asset_tag", "7783-7084-3265-9085-8269-3286-77", "Microsoft Azure"},
	{"chassis_asset_tag", "OracleCloud.com", "Oracle Cloud"},
	{"product_name", "OpenStack", "OpenStack"},
	{"sys_vendor", "OpenStack", "OpenStack"},
	{"sys_vendor", "DigitalOcean", "DigitalOcean"},
	{"sys_vendor", "Hetzner", "Hetzner Cloud"},
	{"sys_vendor", "Alibaba Cloud", "Alibaba Cloud"},
	{"sys_vendor", "Scaleway", "Scaleway"},
	{"sys_vendor", "Vultr", "Vultr"},
}

// Cloud names the cloud the host whose root is fsys (os.DirFS("/")) runs
// in, from its firmware's names, or "cloud-init" where cloud-init ran
// without one of those; "" outside a cloud.
func Cloud(fsys fs.FS) string {
	for _, c := range clouds {
		b, err := fs.ReadFile(fsys, "sys/class/dmi/id/"+c.file)
		if err == nil && strings.Contains(strings.ToLower(string(b)), strings.ToLower(c.contains)) {
			return c.name
		}
	}
	for _, trace := range []string{"run/cloud-init/instance-data.json", "var/lib/cloud/instance"} {
		if _, err := fs.Stat(fsys, trace); err == nil {
			return "cloud-init"
		}
	}
	return ""
}

// Metadata are the entries of the metadata service of cloud, the host's
// (Cloud); none outside a cloud. An instance reads its credentials and
// network settings there: a forged scan must not cut it off.
func Metadata(cloud string) []Entry {
	if cloud == "" {
		return nil
	}
	return Addrs(metadataAddrs, KindMetadata, "the metadata service of the cloud this host runs in ("+cloud+")")
}
