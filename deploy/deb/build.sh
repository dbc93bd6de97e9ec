#!/bin/sh
# build.sh BINARY VERSION ARCH OUTDIR: a .deb of hbf with dpkg-deb: the
# binary, the systemd unit, the example configuration, fail2ban's action.
set -eu
bin=$1 version=$2 arch=$3 out=$4
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

# Debian versions start with a digit: v1.2.3 -> 1.2.3, a commit -> 0~git<commit>.
debversion=${version#v}
case $debversion in
	[0-9]*) ;;
	*) debversion="0~git$debversion" ;;
esac
debversion=$(printf %s "$debversion" | tr -c 'A-Za-z0-9.+~\n' '+')

pkg=$(mktemp -d)
trap 'rm -rf "$pkg"' EXIT
chmod 0755 "$pkg"
umask 022
install -D -m 0755 "$bin" "$pkg/usr/bin/hbf"
install -D -m 0644 "$root/deploy/systemd/hbf.service" "$pkg/lib/systemd/system/hbf.service"
install -D -m 0644 "$root/examples/hbf.yaml" "$pkg/usr/share/doc/hbf/examples/hbf.yaml"
install -D -m 0644 "$root/README.md" "$pkg/usr/share/doc/hbf/README.md"
install -D -m 0644 "$root/docs/operations.md" "$pkg/usr/share/doc/hbf/operations.md"
install -D -m 0644 "$root/deploy/fail2ban/action.d/hbf.py" "$pkg/etc/fail2ban/action.d/hbf.py"
mkdir -p "$pkg/DEBIAN"
echo /etc/fail2ban/action.d/hbf.py > "$pkg/DEBIAN/conffiles"
size=$(du -sk "$pkg/usr" "$pkg/lib" "$pkg/etc" | awk '{s += $1} END {print s}')
cat > "$pkg/DEBIAN/control" <<CONTROL
Package: hbf
Version: $debversion
Architecture: $arch
Maintainer: hbf developers <hbf@example.org>
Installed-Size: $size
Section: net
Priority: optional
Homepage: https://github.com/hbf-firewall/hbf
Description: host-based firewall on eBPF/XDP
 hbf reports every new inbound TCP connection, detects port scans and
 blocks scanners in the kernel with XDP, drops stealth probes, loads
 blocklists, exports Prometheus metrics, and keeps enforcing across
 restarts. Start it with: systemctl enable --now hbf
CONTROL
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$pkg/DEBIAN/"
mkdir -p "$out"
dpkg-deb --root-owner-group --build "$pkg" "$out/hbf_${debversion}_${arch}.deb" >/dev/null
echo "$out/hbf_${debversion}_${arch}.deb"
