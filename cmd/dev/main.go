// Command lxd-gha-autoscaler-dev shows the whole loop on one machine: the
// real service, in-process, against the local LXD, with the GitHub
// stand-in (internal/ghfake) in place of GitHub and a few sample jobs. It
// is also the stand-in's runner inside dev and test instances. It is not
// the service: the service binary (cmd/server) carries no test double.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: lxd-gha-autoscaler-dev [flags]       run the sample jobs (see -h)
       lxd-gha-autoscaler-dev fake-runner [--from-env]
                                          the GitHub stand-in's runner, as the
                                          init of a dev or test instance
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "lxd-gha-autoscaler-dev:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "fake-runner" {
		return fakeRunner(ctx, args[1:], stderr)
	}
	return devCommand(ctx, args, stdout, stderr)
}
