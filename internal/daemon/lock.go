package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/hbf-firewall/hbf/internal/dataplane"
)

// lockStateDir takes the state folder's lock: one daemon per state folder.
// The kernel drops the lock when the process dies, however it dies.
func lockStateDir(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("--state-dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, "hbf.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state folder %s is not writable: %w (what hbf pinned, if anything, stays in force)", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another hbf daemon (pid %s) is running with state dir %s: stop it first, or give this one its own --state-dir and --pin-path",
				string(pid), dir)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())), 0)
	return func() { f.Close() }, nil
}

// Uninstall removes hbf's enforcement when no daemon runs: links, pins.
func Uninstall(pinPath, stateDir string) ([]string, error) {
	release, err := lockStateDir(stateDir)
	if err != nil {
		return nil, err
	}
	defer release()
	return dataplane.Uninstall(pinPath)
}
