package scheduler

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// stillQueued asks GitHub, once, whether a job that has waited here longer
// than RecheckQueuedAfter still waits for a runner there. A job GitHub has
// moved on (a runner took it, or it is over) no longer needs one: a
// replayed old queued delivery, after retention deleted the job's row,
// would otherwise queue it again and hold a runner for good. Such a job is
// closed as GitHub has it, and r, not launched yet, is dropped. When
// GitHub cannot say, the launch goes ahead and the job stays queued.
func (s *Scheduler) stillQueued(ctx context.Context, log zerolog.Logger, r fleet.Runner, job fleet.Job) bool {
	st, err := s.gh.WorkflowJob(ctx, job.InstallationID, job.Repo, job.ID)
	if err != nil {
		log.Warn().Err(err).Msg("cannot ask GitHub whether the long-queued job still waits; launching")
		return true
	}
	if !st.Moved() {
		return true
	}
	now := s.clock.Now()
	waited := now.Sub(job.QueuedAt).Round(time.Second)
	at := "completed (" + st.Conclusion + ")"
	if st.Status == string(fleet.ActionInProgress) {
		at = "in progress on runner " + st.RunnerName
	}
	detail := fmt.Sprintf("queued here for %s, but %s at GitHub: closed without a launch", waited, at)
	err = s.txn(context.WithoutCancel(ctx), func(tx fleet.Tx, m fleet.Metrics) error {
		x, err := tx.Runner(r.Name)
		if err != nil {
			return err
		}
		if x.State == fleet.RunnerLaunching { // nothing made yet: no registration, no instance
			x.State, x.Reason, x.EndedAt = fleet.RunnerDeleted, "not launched: job no longer queued at GitHub", now
			if err := tx.PutRunner(x); err != nil {
				return err
			}
		}
		j, err := tx.Job(job.ID)
		if err != nil || j.State != fleet.JobQueued {
			return err // a webhook moved it meanwhile
		}
		if st.Status == string(fleet.ActionCompleted) {
			j.State, j.Conclusion, j.CompletedAt = fleet.JobCompleted, st.Conclusion, now
			j.Reason = "completed at GitHub while queued here"
		} else {
			j.State, j.RunnerName, j.StartedAt = fleet.JobInProgress, st.RunnerName, now
			j.Reason = "in progress at GitHub while queued here"
			if err := s.claim(tx, m, log, st.RunnerName, now); err != nil {
				return err
			}
		}
		if err := tx.PutJob(j); err != nil {
			return err
		}
		return tx.AddEvent(j.ID, now, "closed", detail)
	})
	if err != nil {
		// The runner row still says launching: the reconciler deals with
		// it like any launch cut short, and the job is asked about again.
		log.Error().Err(err).Msg("record a job GitHub no longer has queued")
		return false
	}
	log.Warn().Str("github_status", st.Status).Dur("waited", waited).
		Msg("job no longer queued at GitHub (a replayed or missed delivery?): closed without a launch")
	return false
}
