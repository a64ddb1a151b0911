package scheduler

import (
	"errors"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// apply folds one recorded delivery into the job and runner state. It runs
// inside the scheduler's transaction and does no outside I/O; m reports
// once the transaction commits. Deliveries come twice, late and out of
// order: a job id seen before never queues again, and a late event never
// moves a job backwards.
func (s *Scheduler) apply(tx fleet.Tx, m fleet.Metrics, d fleet.Delivery) error {
	log := s.log.With().Str("delivery_id", d.DeliveryID).Int64("job_id", d.JobID).Str("action", string(d.Action)).Logger()
	job, err := tx.Job(d.JobID)
	known := err == nil
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		return err
	}
	if !known {
		job = fleet.Job{
			ID: d.JobID, RunID: d.RunID, InstallationID: d.InstallationID, Org: d.Org, Repo: d.Repo,
			Labels: d.Labels, DeliveryID: d.DeliveryID, QueuedAt: d.ReceivedAt,
		}
	}

	switch d.Action {
	case fleet.ActionQueued:
		if known {
			log.Info().Str("state", string(job.State)).Msg("job already known: duplicate or late queued event, nothing to do")
			return nil
		}
		if err := tx.AddEvent(job.ID, d.ReceivedAt, "queued", "delivery "+d.DeliveryID); err != nil {
			return err
		}
		pool, reason := s.cfg.route(d.Labels, d.Org, d.Repo, d.Public)
		if pool == nil {
			m.JobIgnored(reasonCode(reason))
			job.State, job.Reason = fleet.JobIgnored, reason
			log.Info().Strs("labels", d.Labels).Str("repo", d.Repo).Str("reason", reason).Msg("job ignored")
			if err := tx.AddEvent(job.ID, d.ReceivedAt, "ignored", reason); err != nil {
				return err
			}
		} else {
			job.State, job.Pool = fleet.JobQueued, pool.Name
			m.JobQueued(pool.Name)
			log.Info().Str("pool", pool.Name).Msg("job queued")
			if err := tx.AddEvent(job.ID, d.ReceivedAt, "accepted", "pool "+pool.Name); err != nil {
				return err
			}
		}
		return tx.PutJob(job)

	case fleet.ActionInProgress:
		if job.State == fleet.JobCompleted {
			log.Debug().Msg("in_progress after completed: ignored")
			return nil
		}
		if !known {
			job.Reason = "first seen in progress"
		}
		if known && job.State == fleet.JobQueued {
			m.JobStarted(job.Pool, d.ReceivedAt.Sub(job.QueuedAt))
			job.Reason = "" // why it waited: it waits no more
		}
		job.State, job.RunnerName, job.StartedAt = fleet.JobInProgress, d.RunnerName, d.ReceivedAt
		if err := tx.PutJob(job); err != nil {
			return err
		}
		// The claim first, as of the webhook's arrival: it may add the
		// runner's online step, which comes before the job's start.
		if err := s.claim(tx, m, log, d.RunnerName, d.ReceivedAt); err != nil {
			return err
		}
		return tx.AddEvent(job.ID, d.ReceivedAt, "in_progress", "runner "+d.RunnerName)

	case fleet.ActionCompleted:
		if job.State == fleet.JobCompleted {
			log.Debug().Msg("duplicate completed: ignored")
			return nil
		}
		if !known {
			job.Reason = "first seen completed"
		}
		if job.State == fleet.JobInProgress && !job.StartedAt.IsZero() {
			m.JobCompleted(job.Pool, d.Conclusion, d.ReceivedAt.Sub(job.StartedAt))
		}
		if known && job.State == fleet.JobQueued {
			job.Reason = "" // cancelled while waiting: the wait's reason no longer says anything
		}
		job.State, job.Conclusion, job.CompletedAt = fleet.JobCompleted, d.Conclusion, d.ReceivedAt
		if d.RunnerName != "" {
			job.RunnerName = d.RunnerName
		}
		if err := tx.PutJob(job); err != nil {
			return err
		}
		if err := tx.AddEvent(job.ID, d.ReceivedAt, "completed", d.Conclusion); err != nil {
			return err
		}
		if d.RunnerName == "" {
			// Cancelled while queued: it leaves the queue, and Decide removes
			// a runner that is now surplus.
			log.Info().Str("pool", job.Pool).Str("conclusion", d.Conclusion).Msg("job completed without a runner")
			return nil
		}
		r, err := tx.Runner(d.RunnerName)
		if errors.Is(err, fleet.ErrNotFound) {
			log.Info().Str("runner", d.RunnerName).Msg("job completed on a runner that is not ours")
			return nil
		}
		if err != nil {
			return err
		}
		if !r.Live() || (r.State == fleet.RunnerDeleting && !r.DeleteMode.Checked()) {
			return nil
		}
		r.State, r.DeleteMode, r.Reason = fleet.RunnerDeleting, fleet.ModeJobDone, "job completed"
		log.Info().Str("pool", r.Pool).Str("instance", r.Name).Str("conclusion", d.Conclusion).Msg("job completed: deleting its instance")
		return tx.PutRunner(r)
	}
	return nil
}

// claim marks our runner named by an in_progress event as busy. A runner
// being checked for teardown is claimed back: it must not be deleted.
func (s *Scheduler) claim(tx fleet.Tx, m fleet.Metrics, log zerolog.Logger, name string, now time.Time) error {
	if name == "" {
		return nil
	}
	r, err := tx.Runner(name)
	if errors.Is(err, fleet.ErrNotFound) {
		log.Info().Str("runner", name).Msg("job taken by a runner that is not ours")
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case r.State == fleet.RunnerLaunching || r.State == fleet.RunnerStarted:
	case r.State == fleet.RunnerDeleting && r.DeleteMode.Checked():
		log.Warn().Str("instance", name).Str("pool", r.Pool).Msg("runner took a job while being checked for teardown: kept")
	default:
		return nil
	}
	if _, err := markOnline(tx, m, &r, now, "took a job"); err != nil {
		return err
	}
	r.State, r.BusyAt, r.DeleteMode, r.Reason = fleet.RunnerBusy, now, "", ""
	log.Info().Str("pool", r.Pool).Str("instance", name).Msg("runner busy")
	return tx.PutRunner(r)
}

// reasonCode turns an ignore reason into a short metric label.
func reasonCode(reason string) string {
	switch reason {
	case ReasonNoPool:
		return "no_pool"
	case ReasonPublicRepository:
		return "public_repository"
	case ReasonRepositoryNotAllowed:
		return "repository_not_allowed"
	case ReasonOrgNotServed:
		return "organization_not_served"
	}
	return "other"
}
