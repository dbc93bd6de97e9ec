package main

import (
	"io"

	"github.com/spf13/cobra"
)

func newDemoCmd(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{Use: "demo", Hidden: true}
}
