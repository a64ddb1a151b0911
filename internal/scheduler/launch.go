package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// launch makes one runner: a JIT config from GitHub, then the instance,
// created and started, or a prepared instance given its JIT config and
// started. On failure everything made is removed, the runner row is marked
// failed, and the pool backs off; the job stays queued, so it is never
// lost. When o.recheck is set (the job waited long), GitHub is first asked
// whether the job still waits for a runner. When o.after is set, the JIT
// config is asked for at once, and the instance made once that runner's
// instance is deleted.
func (s *Scheduler) launch(r fleet.Runner, o launchOrder) {
	defer s.unpair(o.after)
	log := s.log.With().Str("pool", r.Pool).Int64("job_id", r.JobID).Str("instance", r.Name).Logger()
	pool := s.cfg.pool(r.Pool)
	member := o.member
	ctx, cancel := context.WithTimeout(s.work, s.cfg.Timeouts.Launch)
	defer cancel()
	if o.recheck != nil && !s.stillQueued(ctx, log, r, *o.recheck) {
		return
	}

	jit, err := s.gh.GenerateJITConfig(ctx, fleet.JITRequest{
		InstallationID: r.InstallationID, Org: r.Org, Name: r.Name, Labels: pool.Labels, RunnerGroup: pool.RunnerGroup,
	})
	if err != nil {
		s.m.Launch(r.Pool, "error", 0)
		s.launchFailed(log, r, "jit_config", err)
		return
	}
	r.RunnerID = jit.RunnerID
	// Record the GitHub runner id before creating the instance: a crash from
	// here on leaves enough to remove the record.
	if err := s.update(r.Name, func(x *fleet.Runner) bool { x.RunnerID = jit.RunnerID; return true }); err != nil {
		s.launchFailed(log, r, "record", err)
		return
	}

	if o.after != "" {
		// The JIT config is here while the slot's last instance is still
		// being deleted: GitHub's latency is not in series with LXD's.
		if err := s.waitFreed(ctx, o.after); err != nil {
			s.m.Launch(r.Pool, "error", 0)
			s.launchFailed(log, r, "slot", err)
			return
		}
	}

	target := pool.Target
	if member != "" {
		target = member
	}
	spec := fleet.InstanceSpec{
		Name: r.Name, Image: pool.Image, SourceInstance: pool.SourceInstance, Type: pool.Type,
		Architecture: pool.Architecture, Target: target, Profiles: pool.Profiles, Config: pool.Config,
		Labels: fleet.InstanceLabels{
			Owner: s.cfg.NamePrefix, Pool: r.Pool, JobID: r.JobID, RunnerID: jit.RunnerID,
			Org: r.Org, InstallationID: r.InstallationID, CreatedAt: r.CreatedAt,
		},
		JITConfig: jit.Config,
	}
	began := s.clock.Now()
	if o.prepared {
		err = s.lxd.StartPrepared(ctx, r.Name, spec.Labels, spec.JITConfig)
		if errors.Is(err, fleet.ErrNotFound) {
			// Gone since it was prepared (deleted by hand?): made cold.
			log.Warn().Err(err).Msg("prepared instance gone; creating the instance instead")
			err = s.lxd.Create(ctx, spec)
		}
	} else {
		err = s.lxd.Create(ctx, spec)
	}
	if errors.Is(err, fleet.ErrUnreachable) {
		s.event(r.JobID, "launch_waiting", r.Name+": LXD did not answer; keeping the registration until it does")
		err = s.awaitLXD(ctx, log, spec, err)
		if errors.Is(err, errClaimed) {
			s.m.Launch(r.Pool, "ok", s.clock.Now().Sub(began))
			s.launchSucceeded(r.Pool)
			return
		}
	}
	took := s.clock.Now().Sub(began)
	if err != nil {
		s.m.Launch(r.Pool, "error", took)
		if member != "" && errors.Is(err, fleet.ErrMemberUnreachable) {
			s.suspectMember(member)
		}
		s.launchFailed(log, r, "create", err)
		return
	}
	s.m.Launch(r.Pool, "ok", took)
	s.launchSucceeded(r.Pool)
	err = s.update(r.Name, func(x *fleet.Runner) bool {
		x.StartedAt = s.clock.Now()
		if x.State == fleet.RunnerLaunching { // else an in_progress event already claimed it
			x.State = fleet.RunnerStarted
		}
		return true
	})
	if err != nil {
		log.Error().Err(err).Msg("record started runner")
		return
	}
	log.Info().Int64("runner_id", jit.RunnerID).Msg("runner started")
	s.event(r.JobID, "runner_started", "instance "+r.Name)
}

// launchFailed backs the pool off and cleans up after a launch that failed
// at stage.
func (s *Scheduler) launchFailed(log zerolog.Logger, r fleet.Runner, stage string, err error) {
	var wait time.Duration
	// A member that does not answer is skipped from now on: the pool's
	// next launch goes elsewhere at once, with no backoff.
	if !errors.Is(err, fleet.ErrMemberUnreachable) {
		wait = s.workers.launchFailed(r.Pool, s.clock.Now(), s.cfg.MaxBackoff)
	}
	log.Error().Err(err).Str("stage", stage).Dur("retry_in", wait).Msg("launch failed; the job stays queued")
	s.event(r.JobID, "launch_failed", fmt.Sprintf("%s %s: %v; retry in %v", r.Name, stage, err, wait.Round(time.Second)))
	if stage == "create" {
		// The answer may be lost rather than the work: after an LXD
		// restart, say, the instance can be running and its runner already
		// holding a job. So it is torn down like a surplus runner: GitHub's
		// record first, kept if GitHub says it is busy.
		if err := s.update(r.Name, func(x *fleet.Runner) bool {
			if x.State != fleet.RunnerLaunching {
				return false // an in_progress event claimed it meanwhile
			}
			x.State, x.DeleteMode, x.Reason = fleet.RunnerDeleting, fleet.ModeSurplus, "launch failed: "+err.Error()
			return true
		}); err != nil {
			log.Error().Err(err).Msg("record failed launch")
		}
		return
	}
	if r.RunnerID != 0 {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(s.work), s.cfg.Timeouts.Cleanup)
		defer cancel()
		if err := s.gh.RemoveRunner(ctx, r.InstallationID, r.Org, r.RunnerID); err != nil {
			log.Warn().Err(err).Msg("remove runner record after failed launch; reconcile will retry")
		}
	}
	if err := s.update(r.Name, func(x *fleet.Runner) bool {
		x.State, x.Reason, x.EndedAt = fleet.RunnerFailed, stage+": "+err.Error(), s.clock.Now()
		return true
	}); err != nil {
		log.Error().Err(err).Msg("record failed launch")
	}
}

// awaitLXD finishes a create that LXD did not answer (err): the daemon is
// down, or went away during the call. Nothing can have used the JIT config
// unless the instance runs, so rather than spend a new registration on a
// retry it waits for LXD, with backoff, and then
//   - adopts the instance if it runs;
//   - replaces it with a fresh one, same config, if it exists but does not
//     run: a half-started instance is never started again;
//   - creates it if it does not exist.
//
// It gives up when LXD answers with an error or ctx ends.
func (s *Scheduler) awaitLXD(ctx context.Context, log zerolog.Logger, spec fleet.InstanceSpec, err error) error {
	log.Warn().Err(err).Msg("LXD did not answer the create; keeping the runner's registration until it does")
	// Asking LXD costs one GET: a short cap brings the launch back soon
	// after the daemon is.
	ceiling := min(s.cfg.MaxBackoff, s.cfg.Timeouts.LXDRetryCap)
	for attempt := 0; errors.Is(err, fleet.ErrUnreachable); attempt++ {
		if serr := fleet.Sleep(ctx, s.clock, fleet.Backoff(attempt, time.Second, ceiling)); serr != nil {
			return errors.Join(err, serr)
		}
		// LXD may have finished the start before it went away: the runner
		// came up, took a job, and may be done and torn down by now. Its
		// JIT config is spent, so nothing is made again.
		if state, claimed := s.claimed(ctx, spec.Name); claimed {
			log.Info().Str("state", string(state)).Msg("LXD did not answer, but the runner came up and took a job meanwhile: nothing to make")
			return errClaimed
		}
		var in fleet.Instance
		in, err = s.lxd.Get(ctx, spec.Name)
		switch {
		case errors.Is(err, fleet.ErrNotFound):
		case err != nil:
			continue
		case in.Labels.Owner != s.cfg.NamePrefix:
			return fmt.Errorf("instance %s exists but is not ours (owner %q)", spec.Name, in.Labels.Owner)
		case in.Running():
			log.Info().Msg("LXD is back and the instance runs: adopted")
			return nil
		case in.State != fleet.InstanceStopped:
			// Starting, or in a state a restarted LXD has not settled yet:
			// its runner may be up, so it is asked again, not replaced.
			log.Info().Str("state", string(in.State)).Msg("LXD is back; the instance is neither running nor stopped: asking again")
			err = fmt.Errorf("instance %s is %s: %w", spec.Name, in.State, fleet.ErrUnreachable)
			continue
		default:
			log.Info().Msg("LXD is back; the instance did not start: replacing it")
			if err = s.lxd.Delete(ctx, spec.Name); err != nil {
				continue
			}
		}
		if err = s.lxd.Create(ctx, spec); err != nil && !errors.Is(err, fleet.ErrUnreachable) && s.ours(ctx, spec) {
			// LXD, just back, refused a create of what it had made
			// meanwhile (seen: "already running"): adopt what runs.
			log.Info().Err(err).Msg("LXD refused the create but the instance runs: adopted")
			return nil
		}
	}
	return err
}

// errClaimed ends a launch whose runner an in_progress event claimed while
// the launch waited for LXD: the launch is over, and its outcome is the
// runner's, not the launch's.
var errClaimed = errors.New("runner claimed while its launch waited")

// claimed reports whether the named runner is no longer launching: an
// in_progress event claimed it (and it may have ended since). A state
// that cannot be read counts as not claimed.
func (s *Scheduler) claimed(ctx context.Context, name string) (fleet.RunnerState, bool) {
	var r fleet.Runner
	err := s.st.View(ctx, func(tx fleet.Tx) (err error) { r, err = tx.Runner(name); return err })
	if err != nil {
		return "", false
	}
	return r.State, r.State != fleet.RunnerLaunching
}

// ours reports whether the instance of spec exists, runs, and carries this
// launch's labels (this deployment, this runner's registration).
func (s *Scheduler) ours(ctx context.Context, spec fleet.InstanceSpec) bool {
	in, err := s.lxd.Get(ctx, spec.Name)
	return err == nil && in.Running() && in.Labels.Owner == s.cfg.NamePrefix && in.Labels.RunnerID == spec.Labels.RunnerID
}
