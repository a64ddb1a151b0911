package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/scheduler"
)

// groupCheckTimeout bounds the runner group check: a few reads per pool and
// organization, each retried on GitHub's errors.
const groupCheckTimeout = 2 * time.Minute

// checkRunnerGroups reads the pools' runner groups in every organization
// the App is installed on, and compares what each admits with its pool:
// GitHub gives a queued job to any idle runner of a group that admits the
// job's repository, whatever the service decided. serve refuses to start
// and validate --check-github fails on what it returns as an error.
func checkRunnerGroups(ctx context.Context, cfg *config, gh scheduler.GroupReader) (warnings []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, groupCheckTimeout)
	defer cancel()
	warnings, err = scheduler.CheckRunnerGroups(ctx, cfg.App.Scheduler, gh)
	if err != nil {
		return warnings, fmt.Errorf("runner groups at GitHub:\n%w", err)
	}
	return warnings, nil
}

func printWarnings(w io.Writer, warnings []string) {
	for _, s := range warnings {
		fmt.Fprintln(w, "warning:", s)
	}
}
