package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hbf-firewall/hbf/internal/daemon"
)

func newUninstallCmd(e env) *cobra.Command {
	pinPath, stateDir := daemon.Defaults.PinPath, daemon.Defaults.StateDir
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove hbf's enforcement: detach the XDP program and remove its pins",
		Long: `Remove what keeps enforcing after the daemon stops: the XDP program attached
to each interface and the maps pinned under --pin-path. The daemon must be
stopped (hbf stop).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags(), e.getenv, daemonEnv); err != nil {
				return usageError{err}
			}
			detached, err := daemon.Uninstall(pinPath, stateDir)
			if err != nil {
				return err
			}
			if len(detached) == 0 {
				fmt.Fprintf(e.stdout, "nothing attached; pins under %s removed\n", pinPath)
				return nil
			}
			fmt.Fprintf(e.stdout, "detached from %s; pins under %s removed\n", strings.Join(detached, ", "), pinPath)
			return nil
		},
	}
	cmd.Flags().StringVar(&pinPath, "pin-path", pinPath, "bpffs folder of hbf's pins [HBF_PIN_PATH]")
	cmd.Flags().StringVar(&stateDir, "state-dir", stateDir, "hbf's state folder, to tell whether a daemon runs [HBF_STATE_DIR]")
	return cmd
}
