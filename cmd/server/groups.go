package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
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

// awaitRunnerGroups runs the check for serve, and logs its warnings. While
// GitHub does not answer, it asks again, with backoff, until ctx ends:
// exiting would have systemd give up after a few restarts, and a service
// that is not up only delays work (webhooks GitHub could not deliver are
// redelivered once it is).
func awaitRunnerGroups(ctx context.Context, cfg *config, gh scheduler.GroupReader, log zerolog.Logger) error {
	for attempt := 0; ; attempt++ {
		warnings, err := checkRunnerGroups(ctx, cfg, gh)
		if !scheduler.Unchecked(err) || ctx.Err() != nil {
			for _, w := range warnings {
				log.Warn().Str("check", "runner_groups").Msg(w)
			}
			return err
		}
		wait := fleet.Backoff(attempt, 5*time.Second, time.Minute)
		log.Error().Err(err).Dur("retry_in", wait).Msg("cannot read the runner groups at GitHub; not starting until they are checked")
		if err := fleet.Sleep(ctx, fleet.WallClock, wait); err != nil {
			return fmt.Errorf("runner groups not checked: %w", err)
		}
	}
}

func printWarnings(w io.Writer, warnings []string) {
	for _, s := range warnings {
		fmt.Fprintln(w, "warning:", s)
	}
}
