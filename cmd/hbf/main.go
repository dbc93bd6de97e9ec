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

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/daemon"
)

// version is set at build time: -ldflags "-X main.version=..."
var version = "dev"

// usageError marks errors that are the caller's, for exit status 2.
type usageError struct{ error }

// env is what the commands take from the process, so tests can replace it.
type env struct {
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

// run runs the command line args (after the program's name) and returns
// the exit status.
func run(ctx context.Context, args []string, e env) int {
	root := newRoot(e)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	if errors.Is(err, api.ErrNoDaemon) {
		err = fmt.Errorf("%w: start one with `hbf daemon`, or name its socket with --socket", err)
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
	c := &cli{}
	root.PersistentFlags().StringVar(&c.socket, "socket", api.DefaultSocket, "the daemon's API socket [HBF_SOCKET]")
	root.PersistentFlags().StringVarP(&c.output, "output", "o", "table", "table or json, for the commands that print a table")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error { return c.connect(cmd, e) }
	root.AddCommand(newDaemonCmd(e), newDemoCmd(e),
		newBlockCmd(e, c), newUnblockCmd(e, c), newAllowCmd(e, c), newDisallowCmd(e, c),
		newListCmd(e, c), newWhyCmd(e, c), newStatusCmd(e, c), newEventsCmd(e, c),
		newTopCmd(e, c), newModeCmd(e, c), newReloadCmd(e, c), newStopCmd(e, c), newUninstallCmd(e, c), newFleetCmd(e, c),
		newConfigCmd(e))
	return root
}

// cli is what every client command shares: the flags that name the daemon
// and the output, and the client built from them before the command runs.
type cli struct {
	socket string
	output string // table or json
	json   bool
	client *api.Client
}
