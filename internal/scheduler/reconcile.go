package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// Reconcile brings our state and LXD into line. It runs at start (when
// launches may have been cut short by a crash) and on an interval:
//   - a launch with no worker (interrupted by a crash) is adopted when its
//     instance runs, and torn down otherwise;
//   - a started or busy runner whose instance is gone or stopped has ended:
//     its GitHub record is removed and the row closed;
//   - an instance carrying our keys that no live runner row owns is deleted.
//
// Instances without our keys are never touched (List returns only managed
// ones), nor are those of another deployment: their owner label must be
// our prefix.
//
// It must not run concurrently with Step (Run calls both from one
// goroutine): a runner row that Step has just written but not yet handed
// to a worker would look interrupted.
func (s *Scheduler) Reconcile(ctx context.Context) error {
	// Runners with a worker before the listing may change under it; so may
	// those with a worker when the state is read. Both are left alone.
	busyWorkers := s.running(nil)
	s.refreshCluster(ctx, true)
	insts, err := s.lxd.List(ctx)
	if err != nil {
		s.m.ReconcileError()
		return fmt.Errorf("reconcile: list instances: %w", err)
	}
	exists := make(map[string]fleet.Instance, len(insts))
	mine := insts[:0:0]
	for _, in := range insts {
		if in.Labels.Owner != s.cfg.NamePrefix {
			continue
		}
		exists[in.Name] = in
		mine = append(mine, in)
	}
	insts = mine
	// Where each of ours is; whether its member answers.
	s.noteInstances(insts)
	pl := s.placement(nil)
	unreachable := func(name string) bool {
		_, lost := pl.lost(fleet.Runner{Name: name})
		return lost || exists[name].State == fleet.InstanceError
	}
	if err := s.confirmListing(ctx, exists, busyWorkers, unreachable); err != nil {
		s.m.ReconcileError()
		return fmt.Errorf("reconcile: %w", err)
	}
	owned := map[string]bool{}
	var orgs []fleet.Org
	err = s.txn(ctx, func(tx fleet.Tx, m fleet.Metrics) error {
		clear(owned)
		if err := s.reconcilePrepared(tx, exists, busyWorkers, unreachable, owned); err != nil {
			return err
		}
		live, err := tx.LiveRunners()
		if err != nil {
			return err
		}
		if orgs, err = tx.RunnerOrgs(); err != nil {
			return err
		}
		s.running(busyWorkers)
		for _, r := range live {
			owned[r.Name] = true
			// A runner whose member does not answer is left as it is: LXD
			// cannot say whether its instance runs (a member whose daemon
			// died keeps its containers running). It is seen to again when
			// the member answers.
			if busyWorkers[r.Name] || unreachable(r.Name) {
				continue
			}
			in, ok := exists[r.Name]
			running := ok && in.Running()
			switch r.State {
			case fleet.RunnerLaunching:
				if running {
					// Cut short after LXD took the start: the runner may have
					// registered and even taken a job. Adopt it; the
					// registration timer replaces it if it never comes online.
					r.State, r.StartedAt = fleet.RunnerStarted, s.clock.Now()
					s.log.Info().Str("pool", r.Pool).Str("instance", r.Name).Msg("reconcile: adopting a runner whose launch was interrupted")
					if err := tx.PutRunner(r); err != nil {
						return err
					}
					continue
				}
				// Not running yet is not the same as never running: the
				// start may still be under way at LXD (a leader that lost
				// its lease a moment ago asked for it), and its runner may
				// take a job the moment it is up. So, like a launch that
				// failed at create, it goes as a surplus runner: GitHub's
				// record first, kept if GitHub says it is busy.
				r.State, r.DeleteMode, r.Reason = fleet.RunnerDeleting, fleet.ModeForce, "launch interrupted"
				if r.RunnerID != 0 {
					r.DeleteMode = fleet.ModeSurplus
				}
			case fleet.RunnerStarted, fleet.RunnerBusy:
				if running {
					continue
				}
				busy := r.State == fleet.RunnerBusy
				r.State, r.DeleteMode, r.Reason = fleet.RunnerDeleting, fleet.ModeForce, "instance gone"
				if ok {
					r.Reason = "instance " + string(in.State) + " in LXD"
				}
				if busy {
					// Its job dies with it, and GitHub fails it.
					if err := tx.AddEvent(jobOf(tx, r), s.clock.Now(), "runner_lost", r.Name+": "+r.Reason); err != nil {
						return err
					}
				}
			default:
				continue
			}
			s.log.Info().Str("pool", r.Pool).Str("instance", r.Name).Str("reason", r.Reason).Msg("reconcile: tearing down")
			m.ReconcileAction("teardown_runner")
			if err := tx.PutRunner(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	inflight := s.running(nil)
	s.forgetRunners(func(name string) bool {
		_, ok := exists[name]
		return ok || owned[name] || inflight[name]
	})
	for _, in := range insts {
		if owned[in.Name] || busyWorkers[in.Name] || unreachable(in.Name) {
			continue
		}
		// The state may have been lost or restored: an instance it does not
		// know can still hold a runner that is running a job. Ask GitHub.
		if l := in.Labels; l.RunnerID != 0 && l.Org != "" && l.InstallationID != 0 {
			st, err := s.gh.Runner(ctx, l.InstallationID, l.Org, l.RunnerID)
			if err != nil && !errors.Is(err, fleet.ErrNotFound) {
				s.log.Warn().Err(err).Str("instance", in.Name).Msg("reconcile: cannot check an unknown instance's runner; left for the next round")
				continue
			}
			if err == nil && st.Busy {
				s.log.Info().Str("instance", in.Name).Str("pool", in.Labels.Pool).Msg("reconcile: unknown instance's runner is busy; left alone")
				continue
			}
		}
		s.log.Warn().Str("instance", in.Name).Str("pool", in.Labels.Pool).Msg("reconcile: deleting our instance that no live runner owns")
		s.m.ReconcileAction("delete_orphan_instance")
		if err := s.lxd.Delete(ctx, in.Name); err != nil {
			s.log.Warn().Err(err).Str("instance", in.Name).Msg("reconcile: delete failed; will retry")
		}
	}
	s.prune(ctx)
	var errs []error
	offline := map[string]bool{}
	for _, o := range orgs {
		if err := s.reconcileRecords(ctx, o, owned, busyWorkers, offline); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.retireOffline(ctx, offline); err != nil {
		errs = append(errs, err)
	}
	s.Notify()
	if err := errors.Join(errs...); err != nil {
		s.m.ReconcileError()
		return err
	}
	s.m.ReconcileDone(s.clock.Now())
	return nil
}

// reconcilePrepared brings the prepared instances' rows into line with
// LXD, and adds their names to owned: a prepare cut short is kept if its
// instance was made (it is stopped), and forgotten if not; a prepared
// instance that is gone is forgotten; one that runs (nothing of ours
// starts one without a job) is deleted.
func (s *Scheduler) reconcilePrepared(tx fleet.Tx, exists map[string]fleet.Instance, busy map[string]bool, unreachable func(string) bool, owned map[string]bool) error {
	all, err := tx.PreparedInstances()
	if err != nil {
		return err
	}
	for _, x := range all {
		owned[x.Name] = true
		if busy[x.Name] || unreachable(x.Name) {
			continue
		}
		in, ok := exists[x.Name]
		switch {
		case !ok:
			if x.State != fleet.PreparedDeleting {
				s.log.Info().Str("pool", x.Pool).Str("instance", x.Name).Msg("reconcile: prepared instance gone")
			}
			if err := tx.DeletePrepared(x.Name); err != nil {
				return err
			}
			continue
		case x.State == fleet.PreparedDeleting:
			continue
		case in.State != fleet.InstanceStopped:
			x.State, x.Reason = fleet.PreparedDeleting, "prepared instance "+string(in.State)+" in LXD"
		case x.State == fleet.PreparedCreating:
			x.State, x.Image = fleet.PreparedReady, in.Image
			s.log.Info().Str("pool", x.Pool).Str("instance", x.Name).Msg("reconcile: adopting a prepared instance whose prepare was interrupted")
		default:
			continue
		}
		if err := tx.PutPrepared(x); err != nil {
			return err
		}
	}
	return nil
}

// confirmListing asks LXD again, one instance at a time, about each live
// runner whose instance the listing shows missing or not running, and
// corrects exists with the answer; a runner is torn down on that word
// only. While a cluster recovers from the loss of a member (its database
// leader, above all), a listing was seen to show running instances of
// healthy members as gone or stopped: a teardown on it killed runners in
// the middle of their jobs.
func (s *Scheduler) confirmListing(ctx context.Context, exists map[string]fleet.Instance, busy map[string]bool, unreachable func(string) bool) error {
	var live []fleet.Runner
	if err := s.st.View(ctx, func(tx fleet.Tx) (err error) { live, err = tx.LiveRunners(); return err }); err != nil {
		return err
	}
	for _, r := range live {
		if in, ok := exists[r.Name]; (ok && in.Running()) || busy[r.Name] || unreachable(r.Name) {
			continue
		}
		switch r.State {
		case fleet.RunnerLaunching, fleet.RunnerStarted, fleet.RunnerBusy:
		default:
			continue
		}
		in, err := s.lxd.Get(ctx, r.Name)
		switch {
		case errors.Is(err, fleet.ErrNotFound):
			delete(exists, r.Name)
		case err != nil:
			// Not known now: left for the next round, as if it ran.
			s.log.Warn().Err(err).Str("instance", r.Name).Msg("reconcile: cannot confirm the listing; left for the next round")
			exists[r.Name] = fleet.Instance{Name: r.Name, State: fleet.InstanceError}
		default:
			if prev, ok := exists[r.Name]; !ok || prev.State != in.State {
				s.log.Info().Str("instance", r.Name).Str("listed", string(prev.State)).Str("now", string(in.State)).Msg("reconcile: LXD's listing corrected")
			}
			exists[r.Name] = in
		}
	}
	return nil
}

// prune drops the state past its retention; a failure waits for the next
// round.
func (s *Scheduler) prune(ctx context.Context) {
	var n int64
	err := s.st.Update(ctx, func(tx fleet.Tx) (err error) {
		n, err = tx.Prune(s.clock.Now().Add(-s.cfg.Retention))
		return err
	})
	switch {
	case err != nil:
		s.log.Warn().Err(err).Msg("reconcile: prune old state")
	case n > 0:
		s.log.Info().Int64("rows", n).Msg("reconcile: pruned state past retention")
	}
}

// reconcileRecords removes the organization's runner records that carry our
// prefix, are offline and idle, and belong to no live runner: what is left
// when a launch failed half way, or a runner's instance died. The offline,
// idle records of live runners are added to offline.
func (s *Scheduler) reconcileRecords(ctx context.Context, o fleet.Org, owned, busyWorkers, offline map[string]bool) error {
	records, err := s.gh.ListRunners(ctx, o.InstallationID, o.Login)
	if err != nil {
		return fmt.Errorf("reconcile: list runners of %s: %w", o.Login, err)
	}
	for _, r := range records {
		if !strings.HasPrefix(r.Name, s.cfg.NamePrefix) || r.Online || r.Busy || busyWorkers[r.Name] {
			continue
		}
		if owned[r.Name] {
			offline[r.Name] = true
			continue
		}
		s.log.Info().Str("org", o.Login).Str("runner", r.Name).Int64("runner_id", r.ID).Msg("reconcile: removing offline runner record with no instance")
		s.m.ReconcileAction("remove_runner_record")
		if err := s.gh.RemoveRunner(ctx, o.InstallationID, o.Login, r.ID); err != nil && !errors.Is(err, fleet.ErrRunnerBusy) {
			s.log.Warn().Err(err).Str("runner", r.Name).Msg("reconcile: remove runner record failed; will retry")
		}
	}
	return nil
}

// retireOffline tears down idle runners that were online and that GitHub
// now lists offline: the runner process hung or lost its network while its
// instance still runs. Counted as an unassigned runner, such a runner would
// keep a queued job waiting until max_idle_age. It goes like a surplus
// runner (GitHub's record first, kept if GitHub says it took a job), and
// the job gets a new runner at the next step. A runner never seen online is
// the registration timer's business.
func (s *Scheduler) retireOffline(ctx context.Context, offline map[string]bool) error {
	if len(offline) == 0 {
		return nil
	}
	busyWorkers := s.running(nil)
	return s.txn(ctx, func(tx fleet.Tx, m fleet.Metrics) error {
		for name := range offline {
			r, err := tx.Runner(name)
			if err != nil {
				return fmt.Errorf("reconcile: %w", err)
			}
			if r.State != fleet.RunnerStarted || r.OnlineAt.IsZero() || busyWorkers[name] {
				continue
			}
			r.State, r.DeleteMode, r.Reason = fleet.RunnerDeleting, fleet.ModeSurplus, "runner went offline at GitHub"
			s.log.Warn().Str("pool", r.Pool).Str("instance", r.Name).Msg("reconcile: idle runner went offline at GitHub; replacing it")
			m.ReconcileAction("retire_offline_runner")
			if err := tx.PutRunner(r); err != nil {
				return err
			}
			if err := tx.AddEvent(jobOf(tx, r), s.clock.Now(), "teardown", r.Name+": "+r.Reason); err != nil {
				return err
			}
		}
		return nil
	})
}
