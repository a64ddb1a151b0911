package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/app"
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

// firstGroupCheck bounds serve's check at start: when GitHub does not
// answer by then, the service starts with launches held (below).
const firstGroupCheck = 20 * time.Second

// startGroupCheck runs the check for serve and logs its warnings. A
// finding refuses the start (the error). When GitHub does not answer, the
// service must still start, or a GitHub outage during a restart would
// leave webhooks unrecorded (and systemd would give up after a few
// restarts): unchecked is true, and the caller holds launches and runs
// awaitRunnerGroups as a leader task.
func startGroupCheck(ctx context.Context, cfg *config, gh scheduler.GroupReader, log zerolog.Logger) (unchecked error, err error) {
	cctx, cancel := context.WithTimeout(ctx, firstGroupCheck)
	defer cancel()
	warnings, err := checkRunnerGroups(cctx, cfg, gh)
	if scheduler.Unchecked(err) || (err != nil && cctx.Err() != nil && ctx.Err() == nil) {
		log.Error().Err(err).Msg("cannot read the runner groups at GitHub: starting with launches held until they are checked")
		return err, nil
	}
	for _, w := range warnings {
		log.Warn().Str("check", "runner_groups").Msg(w)
	}
	return nil, err
}

// awaitRunnerGroups checks again, with backoff, until GitHub answers, and
// then releases the launches, or keeps them held when it finds a runner
// group that admits more than its pool: the operator must fix the group
// or the config, and restart.
func awaitRunnerGroups(ctx context.Context, cfg *config, gh scheduler.GroupReader, a *app.App, log zerolog.Logger) error {
	for attempt := 0; ; attempt++ {
		wait := fleet.Backoff(attempt, 5*time.Second, time.Minute)
		if err := fleet.Sleep(ctx, fleet.WallClock, wait); err != nil {
			return nil
		}
		warnings, err := checkRunnerGroups(ctx, cfg, gh)
		switch {
		case ctx.Err() != nil:
			return nil
		case scheduler.Unchecked(err):
			log.Warn().Err(err).Dur("retry_in", wait).Msg("runner groups still not checked at GitHub: launches stay held")
			continue
		}
		for _, w := range warnings {
			log.Warn().Str("check", "runner_groups").Msg(w)
		}
		if err != nil {
			log.Error().Err(err).Msg("launches stay held until the runner groups admit no more than their pools")
			a.HoldLaunches("a runner group admits more than its pool (see the log)")
			<-ctx.Done()
			return nil
		}
		log.Info().Msg("runner groups checked at GitHub: launches released")
		a.ReleaseLaunches()
		return nil
	}
}

func printWarnings(w io.Writer, warnings []string) {
	for _, s := range warnings {
		fmt.Fprintln(w, "warning:", s)
	}
}
