package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/hbf-firewall/hbf/internal/demo"
)

func newDemoCmd(e env) *cobra.Command {
	opts := demo.Options{MaxPorts: 3}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "See hbf work in a throw-away lab of network namespaces (root)",
		Long: `Build a lab of network namespaces (a protected host, a client and a
scanner), run hbf on the host's interface, let the client connect and the
scanner scan (nmap when installed, else a built-in TCP scanner), show hbf's
events live and a summary, then remove the lab. Your own network is not
touched.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Scanner != "" && opts.Scanner != "nmap" && opts.Scanner != "builtin" {
				return usageError{fmt.Errorf("--scanner %q: use nmap or builtin", opts.Scanner)}
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			opts.Exe = exe
			opts.Stdout = e.stdout
			return demo.Run(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Scanner, "scanner", "", "nmap or builtin (default: nmap when installed)")
	cmd.Flags().IntVar(&opts.MaxPorts, "max-ports", opts.MaxPorts, "the scan threshold hbf runs with")
	return cmd
}
