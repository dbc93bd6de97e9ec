package dataplane

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultBPFFS is where distributions mount the BPF filesystem.
const DefaultBPFFS = "/sys/fs/bpf"

// ensureBPFFS makes sure dir lies on a BPF filesystem, where pins live. When
// it lies under DefaultBPFFS and nothing is mounted there (hosts without
// systemd, minimal VMs), it mounts one, as systemd would at boot.
func ensureBPFFS(dir string) error {
	if onBPFFS(dir) {
		return nil
	}
	rel, err := filepath.Rel(DefaultBPFFS, dir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("pin path %s is not on a BPF filesystem: mount one (mount -t bpf bpf DIR) or use a folder under %s", dir, DefaultBPFFS)
	}
	// Two hbf processes starting at once must not both mount: the second
	// mount would hide the first one's pins.
	dirfd, err := unix.Open(DefaultBPFFS, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", DefaultBPFFS, err)
	}
	defer unix.Close(dirfd)
	if err := unix.Flock(dirfd, unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", DefaultBPFFS, err)
	}
	if onBPFFS(DefaultBPFFS) {
		return nil
	}
	if err := unix.Mount("bpf", DefaultBPFFS, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount a BPF filesystem on %s: %w", DefaultBPFFS, err)
	}
	return nil
}

// onBPFFS reports whether the nearest existing folder of path is on bpffs.
func onBPFFS(path string) bool {
	for p := path; ; p = filepath.Dir(p) {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if err == nil {
			return st.Type == unix.BPF_FS_MAGIC
		}
		if !os.IsNotExist(err) || p == filepath.Dir(p) {
			return false
		}
	}
}
