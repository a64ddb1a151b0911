package scheduler

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// maxOnlineChecks caps the GitHub reads of one online check, so that a
// burst of launches does not turn into a burst of reads.
const maxOnlineChecks = 20

// markOnline records the first sign that r's runner is online: GitHub
// lists it online or busy, or it took a job. It sets r.OnlineAt, observes
// the readiness histogram and adds a timeline step, once per runner; the
// caller writes r. It reports whether this was the first sign.
func markOnline(tx fleet.Tx, m fleet.Metrics, r *fleet.Runner, now time.Time, how string) (bool, error) {
	if !r.OnlineAt.IsZero() {
		return false, nil
	}
	r.OnlineAt = now
	m.RunnerReady(r.Pool, now.Sub(r.CreatedAt))
	return true, tx.AddEvent(r.JobID, now, "runner_online", r.Name+": "+how) // none for a warm runner (job 0)
}

// checkOnline asks GitHub about started runners not yet seen online. GitHub
// sends no webhook when a runner comes online, and without this the
// timeline and the readiness histogram would learn it only when the runner
// takes a job. One read per runner, the longest waiting first, at most
// maxOnlineChecks a round; Run calls it every OnlineCheckInterval.
func (s *Scheduler) checkOnline(ctx context.Context) {
	var pending []fleet.Runner
	err := s.st.View(ctx, func(tx fleet.Tx) error {
		live, err := tx.LiveRunners()
		for _, r := range live {
			if r.State == fleet.RunnerStarted && r.OnlineAt.IsZero() && r.RunnerID != 0 {
				pending = append(pending, r)
			}
		}
		return err
	})
	if err != nil {
		s.log.Warn().Err(err).Msg("online check: read state")
		return
	}
	slices.SortFunc(pending, func(a, b fleet.Runner) int { return a.StartedAt.Compare(b.StartedAt) })
	for _, r := range pending[:min(len(pending), maxOnlineChecks)] {
		st, err := s.gh.Runner(ctx, r.InstallationID, r.Org, r.RunnerID)
		if err != nil {
			if !errors.Is(err, fleet.ErrNotFound) && ctx.Err() == nil {
				s.log.Debug().Err(err).Str("instance", r.Name).Msg("online check: GitHub did not say; next round")
			}
			continue
		}
		if !st.Online && !st.Busy {
			continue
		}
		err = s.txn(ctx, func(tx fleet.Tx, m fleet.Metrics) error {
			x, err := tx.Runner(r.Name)
			if err != nil || (x.State != fleet.RunnerStarted && x.State != fleet.RunnerBusy) {
				return err
			}
			if first, err := markOnline(tx, m, &x, s.clock.Now(), "online at GitHub"); !first || err != nil {
				return err
			}
			return tx.PutRunner(x)
		})
		if err != nil {
			s.log.Warn().Err(err).Str("instance", r.Name).Msg("online check: record")
			continue
		}
		s.log.Debug().Str("pool", r.Pool).Str("instance", r.Name).Msg("runner online")
	}
}
