package testenv

import (
	"os"
	"os/exec"
)

// StartLogged starts cmd with its output appended to the file at logPath,
// and returns the log file and a channel closed once cmd has exited: the
// servers tests run (etcd, a CrowdSec LAPI) are started so, and stopped by
// their pid.
func StartLogged(cmd *exec.Cmd, logPath string) (*os.File, <-chan struct{}, error) {
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	return log, done, nil
}
