// Command hbf is a host-based firewall on eBPF/XDP: it reports every new
// inbound TCP connection, detects port scans and blocks scanners in the
// kernel. `hbf daemon` runs it; the other subcommands help around it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/hbf-firewall/hbf/internal/daemon"
)

// version is set at build time: -ldflags "-X main.version=..."
var version = "dev"

// usageError marks errors that are the caller's, for exit status 2.
type usageError struct{ error }

// env is what the commands take from the process, so tests can replace it.
type env struct {
	args      []string // the command line, after the program's name
	getenv    func(string) string
	stdout    io.Writer
	stderr    io.Writer
	runDaemon func(context.Context, daemon.Config) error
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], env{getenv: os.Getenv, stdout: os.Stdout, stderr: os.Stderr, runDaemon: daemon.Run}))
}

func run(ctx context.Context, args []string, e env) int {
	e.args = args
	return execute(ctx, args, e)
}

func execute(ctx context.Context, args []string, e env) int {
	root := newRoot(e)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(e.stderr, "hbf:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func newRoot(e env) *cobra.Command {
	root := &cobra.Command{
		Use:   "hbf",
		Short: "A host-based firewall on eBPF/XDP",
		Long: `hbf reports every new inbound TCP connection, detects port scans and blocks
the scanner in the kernel (XDP), before the probe that crosses the threshold
gets through.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see %s --help)", err, c.CommandPath())}
	})
	root.AddCommand(newDaemonCmd(e), newDemoCmd(e),
		newBlockCmd(e), newUnblockCmd(e), newAllowCmd(e), newDisallowCmd(e),
		newListCmd(e), newWhyCmd(e), newStatusCmd(e), newEventsCmd(e),
		newModeCmd(e), newReloadCmd(e), newStopCmd(e), newUninstallCmd(e), newConfigCmd(e))
	return root
}
