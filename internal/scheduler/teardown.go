package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// teardown deletes one runner as its mode demands. A failed attempt leaves
// the row in state deleting, and the loop tries again after a backoff.
func (s *Scheduler) teardown(r fleet.Runner) {
	log := s.log.With().Str("pool", r.Pool).Str("instance", r.Name).Str("mode", string(r.DeleteMode)).Logger()
	ctx, cancel := context.WithTimeout(s.work, s.cfg.Timeouts.Teardown)
	defer cancel()
	retry := func(what string, err error) {
		d := fleet.Backoff(3, time.Second, s.cfg.MaxBackoff)
		s.setRetry(r.Name, s.clock.Now().Add(d))
		log.Warn().Err(err).Dur("retry_in", d).Msg(what + " failed; will retry")
	}

	if r.DeleteMode == fleet.ModeRegistration && r.RunnerID != 0 {
		st, err := s.gh.Runner(ctx, r.InstallationID, r.Org, r.RunnerID)
		switch {
		case err == nil && st.Busy:
			s.keep(log, r, fleet.RunnerBusy, "runner is busy at GitHub")
			return
		case err == nil && st.Online:
			s.keep(log, r, fleet.RunnerStarted, "runner is online at GitHub")
			return
		case err != nil && !errors.Is(err, fleet.ErrNotFound):
			retry("check runner", err)
			return
		}
	}
	if r.DeleteMode.Checked() && r.RunnerID != 0 {
		err := s.gh.RemoveRunner(ctx, r.InstallationID, r.Org, r.RunnerID)
		switch {
		case errors.Is(err, fleet.ErrRunnerBusy):
			s.keep(log, r, fleet.RunnerBusy, "runner took a job")
			return
		case err != nil:
			retry("remove runner record", err)
			return
		}
	}

	// The GitHub record is gone (or the runner's job is over). On a member
	// that does not answer, the instance waits for the member: what is
	// left to do is a forced delete, which the loop starts once the member
	// answers again.
	if m, lost := s.lostMember(r.Name); lost {
		if r.DeleteMode.Checked() {
			if err := s.update(r.Name, func(x *fleet.Runner) bool {
				if x.State != fleet.RunnerDeleting {
					return false
				}
				x.DeleteMode = fleet.ModeForce
				return true
			}); err != nil {
				log.Error().Err(err).Msg("record teardown waiting for its member")
			}
		}
		log.Info().Str("member", m).Msg("instance left until its cluster member answers again")
		return
	}

	// Delete the instance, unless an in_progress event claimed the runner
	// meanwhile.
	var still bool
	err := s.st.View(ctx, func(tx fleet.Tx) error {
		x, err := tx.Runner(r.Name)
		still = err == nil && x.State == fleet.RunnerDeleting
		return err
	})
	if err != nil || !still {
		return
	}
	if err := s.lxd.Delete(ctx, r.Name); err != nil {
		retry("delete instance", err)
		return
	}
	if r.DeleteMode == fleet.ModeForce && r.RunnerID != 0 {
		if err := s.gh.RemoveRunner(ctx, r.InstallationID, r.Org, r.RunnerID); err != nil && !errors.Is(err, fleet.ErrRunnerBusy) {
			log.Warn().Err(err).Msg("remove runner record after forced delete")
		}
	}
	if err := s.update(r.Name, func(x *fleet.Runner) bool {
		x.State, x.EndedAt = fleet.RunnerDeleted, s.clock.Now()
		return true
	}); err != nil {
		log.Error().Err(err).Msg("record deleted runner")
		return
	}
	s.noteFreed()
	if r.DeleteMode == fleet.ModeRegistration {
		s.countAttempt(log, r)
	}
	s.setRetry(r.Name, time.Time{})
	log.Info().Str("reason", r.Reason).Msg("instance deleted")
	s.m.Teardown(r.Pool, r.DeleteMode)
	var job int64
	_ = s.st.View(ctx, func(tx fleet.Tx) error { job = jobOf(tx, r); return nil })
	s.event(job, "instance_deleted", r.Name+": "+r.Reason)
}

// keep cancels a teardown because GitHub says the runner is wanted: it
// took a job (state busy) or is online and idle (state started).
func (s *Scheduler) keep(log zerolog.Logger, r fleet.Runner, state fleet.RunnerState, why string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.work), s.cfg.Timeouts.StateWrite)
	defer cancel()
	err := s.txn(ctx, func(tx fleet.Tx, m fleet.Metrics) error {
		x, err := tx.Runner(r.Name)
		if err != nil || x.State != fleet.RunnerDeleting {
			return err
		}
		x.State, x.DeleteMode, x.Reason = state, "", ""
		now := s.clock.Now()
		if state == fleet.RunnerBusy && x.BusyAt.IsZero() {
			x.BusyAt = now
		}
		if _, err := markOnline(tx, m, &x, now, why); err != nil {
			return err
		}
		return tx.PutRunner(x)
	})
	if err != nil {
		log.Error().Err(err).Msg("record kept runner")
		return
	}
	log.Info().Str("state", string(state)).Msg("teardown cancelled: " + why)
	s.event(r.JobID, "teardown_cancelled", r.Name+": "+why)
}

// countAttempt charges a runner that never came online to the job it was
// launched for. After MaxAttempts such runners the job is given up: the
// image or the network is broken, and relaunching forever only hides it.
func (s *Scheduler) countAttempt(log zerolog.Logger, r fleet.Runner) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.work), s.cfg.Timeouts.StateWrite)
	defer cancel()
	err := s.st.Update(ctx, func(tx fleet.Tx) error {
		j, err := tx.Job(r.JobID)
		if errors.Is(err, fleet.ErrNotFound) {
			return nil
		}
		if err != nil || j.State != fleet.JobQueued {
			return err
		}
		j.Attempts++
		if j.Attempts >= s.cfg.MaxAttempts {
			j.State = fleet.JobAbandoned
			j.Reason = fmt.Sprintf("no runner came online within registration_timeout in %d attempts", j.Attempts)
			log.Error().Int64("job_id", j.ID).Str("reason", j.Reason).Msg("job given up: check the pool's image and network")
			if err := tx.AddEvent(j.ID, s.clock.Now(), "abandoned", j.Reason); err != nil {
				return err
			}
		} else {
			log.Warn().Int64("job_id", j.ID).Int("attempts", j.Attempts).Msg("runner never came online; launching a replacement")
		}
		return tx.PutJob(j)
	})
	if err != nil {
		log.Error().Err(err).Msg("count launch attempt")
	}
}
