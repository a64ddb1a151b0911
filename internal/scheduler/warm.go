package scheduler

// Warm from the first second: the organizations warm pools serve are the
// App's installations, listed at start and on an interval and told by
// installation webhooks between; and prepared instances, created and
// stopped ahead of any job, so that a launch is only JIT config, set it,
// start.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// warmOrgs returns the organizations warm pools keep runners for: the
// App's active installations, and those of queued jobs (an installation
// not heard of yet) unless their installation is known to be gone. Before
// any installation is known (never listed, no webhook yet), it is the
// organizations jobs were routed for, as when the service learnt them
// only from jobs.
func (s *Scheduler) warmOrgs(tx fleet.Tx, queued []fleet.Job) ([]fleet.Org, error) {
	installs, err := tx.Installations()
	if err != nil {
		return nil, err
	}
	orgs := map[fleet.Org]bool{}
	gone := map[int64]bool{}
	if len(installs) == 0 {
		if !s.orgsLoaded {
			known, err := tx.JobOrgs()
			if err != nil {
				return nil, err
			}
			for _, o := range known {
				s.orgs[o] = true
			}
			s.orgsLoaded = true
		}
		for _, j := range queued {
			s.orgs[fleet.Org{InstallationID: j.InstallationID, Login: j.Org}] = true
		}
		for o := range s.orgs {
			orgs[o] = true
		}
	}
	for _, in := range installs {
		if in.State == fleet.InstallationActive {
			orgs[in.Org()] = true
		} else {
			gone[in.ID] = true
		}
	}
	for _, j := range queued {
		if !gone[j.InstallationID] {
			orgs[fleet.Org{InstallationID: j.InstallationID, Login: j.Org}] = true
		}
	}
	out := make([]fleet.Org, 0, len(orgs))
	for o := range orgs {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b fleet.Org) int { return strings.Compare(a.Login, b.Login) })
	return out, nil
}

// refreshInstallations lists the App's installations at GitHub and
// records them: those listed are active, those known and no longer listed
// are gone (uninstalled or suspended). The listing's word is as of when
// it was asked for, so an installation webhook recorded meanwhile wins.
func (s *Scheduler) refreshInstallations(ctx context.Context) {
	at := s.clock.Now()
	orgs, err := s.gh.Installations(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("list the App's installations failed; warm pools keep the organizations known until the next try")
		}
		return
	}
	var added, removed []string
	err = s.st.Update(ctx, func(tx fleet.Tx) error {
		added, removed = nil, nil
		known, err := tx.Installations()
		if err != nil {
			return err
		}
		was := map[int64]fleet.Installation{}
		for _, k := range known {
			was[k.ID] = k
		}
		listed := map[int64]bool{}
		for _, o := range orgs {
			listed[o.InstallationID] = true
			if k, ok := was[o.InstallationID]; ok && k.State == fleet.InstallationActive && k.Login == o.Login {
				continue
			}
			if err := tx.PutInstallation(fleet.Installation{ID: o.InstallationID, Login: o.Login, State: fleet.InstallationActive, At: at}); err != nil {
				return err
			}
			added = append(added, o.Login)
		}
		for _, k := range known {
			if listed[k.ID] || k.State != fleet.InstallationActive {
				continue
			}
			k.State, k.At = fleet.InstallationDeleted, at
			if err := tx.PutInstallation(k); err != nil {
				return err
			}
			removed = append(removed, k.Login)
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("record the App's installations")
		}
		return
	}
	if len(added)+len(removed) > 0 {
		s.log.Info().Strs("installed", added).Strs("gone", removed).Int("listed", len(orgs)).Msg("the App's installations changed")
		s.Notify()
	}
}

// refreshImages looks up what the image of each pool with prepared
// instances stands for now: a prepared instance of another image is
// replaced.
func (s *Scheduler) refreshImages(ctx context.Context) {
	seen := map[string]bool{}
	changed := false
	for _, p := range s.cfg.Pools {
		if p.Prepared == 0 || p.Image == "" || seen[p.Image] {
			continue
		}
		seen[p.Image] = true
		fp, err := s.lxd.ImageFingerprint(ctx, p.Image)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Debug().Err(err).Str("image", p.Image).Msg("look up image; next round")
			}
			continue
		}
		s.mu.Lock()
		old := s.images[p.Image]
		s.images[p.Image] = fp
		s.mu.Unlock()
		if old != fp {
			changed = true
			if old != "" {
				s.log.Info().Str("image", p.Image).Str("was", old).Str("now", fp).Msg("image changed: replacing prepared instances")
			}
		}
	}
	if changed {
		s.Notify()
	}
}

// recordPrepared writes, in the step's transaction, the prepared
// instances Decide wants made (rows in state creating) and those it wants
// gone (state deleting), and returns in prepare and unprepare what the
// workers are to do: every row being deleted, not only the new ones.
func (s *Scheduler) recordPrepared(tx fleet.Tx, snap Snapshot, dec Decision, now time.Time, prepare, unprepare *[]fleet.Prepared) error {
	for _, p := range dec.Prepares {
		x := fleet.Prepared{Name: s.newName(p.Pool), Pool: p.Pool, Member: p.Member, State: fleet.PreparedCreating, CreatedAt: now}
		if err := tx.PutPrepared(x); err != nil {
			return err
		}
		if p.Member != "" {
			s.setWhere(x.Name, p.Member)
		}
		*prepare = append(*prepare, x)
	}
	going := map[string]string{}
	for _, u := range dec.Unprepares {
		going[u.Name] = u.Reason
	}
	for _, x := range snap.Prepared {
		if why, ok := going[x.Name]; ok && x.State != fleet.PreparedDeleting {
			x.State, x.Reason = fleet.PreparedDeleting, why
			if err := tx.PutPrepared(x); err != nil {
				return err
			}
			s.log.Info().Str("pool", x.Pool).Str("instance", x.Name).Str("reason", why).Msg("prepared instance to be replaced")
		}
		if x.State == fleet.PreparedDeleting {
			*unprepare = append(*unprepare, x)
		}
	}
	return nil
}

// startPrepared starts the workers that make and delete prepared
// instances.
func (s *Scheduler) startPrepared(now time.Time, prepare, unprepare []fleet.Prepared) {
	for _, x := range prepare {
		s.start(fleet.Runner{Name: x.Name, Pool: x.Pool}, func(fleet.Runner) { s.prepare(x) }, s.Notify)
	}
	for _, x := range unprepare {
		if !now.Before(s.retryAt(x.Name)) {
			s.start(fleet.Runner{Name: x.Name, Pool: x.Pool}, func(fleet.Runner) { s.unprepare(x) }, s.Notify)
		}
	}
}

// prepare makes one prepared instance: created from the pool's image and
// left stopped, with its labels and no JIT config. On failure the pool's
// prepares back off and whatever the create left is deleted.
func (s *Scheduler) prepare(x fleet.Prepared) {
	log := s.log.With().Str("pool", x.Pool).Str("instance", x.Name).Logger()
	pool := s.cfg.pool(x.Pool)
	ctx, cancel := context.WithTimeout(s.work, s.cfg.Timeouts.Launch)
	defer cancel()
	target := pool.Target
	if x.Member != "" {
		target = x.Member
	}
	began := s.clock.Now()
	err := s.lxd.Prepare(ctx, fleet.InstanceSpec{
		Name: x.Name, Image: pool.Image, Type: pool.Type, Architecture: pool.Architecture, Target: target,
		Profiles: pool.Profiles, Config: pool.Config,
		Labels: fleet.InstanceLabels{Owner: s.cfg.NamePrefix, Pool: x.Pool, CreatedAt: x.CreatedAt},
	})
	var image string
	if err == nil {
		var in fleet.Instance
		if in, err = s.lxd.Get(ctx, x.Name); err == nil {
			image = in.Image
		}
	}
	if err != nil {
		wait := s.workers.prepareFailed(x.Pool, s.clock.Now(), s.cfg.MaxBackoff)
		log.Warn().Err(err).Dur("retry_in", wait).Msg("prepare instance failed")
		if uerr := s.updatePrepared(x.Name, func(p *fleet.Prepared) {
			p.State, p.Reason = fleet.PreparedDeleting, "prepare failed: "+err.Error()
		}); uerr != nil {
			log.Error().Err(uerr).Msg("record failed prepare")
		}
		return
	}
	s.workers.prepareSucceeded(x.Pool)
	if err := s.updatePrepared(x.Name, func(p *fleet.Prepared) {
		if p.State == fleet.PreparedCreating { // else it is already being replaced
			p.State, p.Image = fleet.PreparedReady, image
		}
	}); err != nil {
		log.Error().Err(err).Msg("record prepared instance")
		return
	}
	log.Info().Dur("took", s.clock.Now().Sub(began)).Str("image", image).Msg("prepared instance ready")
}

// unprepare deletes a prepared instance and its row; a failure is tried
// again after a backoff.
func (s *Scheduler) unprepare(x fleet.Prepared) {
	log := s.log.With().Str("pool", x.Pool).Str("instance", x.Name).Logger()
	ctx, cancel := context.WithTimeout(s.work, s.cfg.Timeouts.Teardown)
	defer cancel()
	if err := s.lxd.Delete(ctx, x.Name); err != nil {
		d := fleet.Backoff(3, time.Second, s.cfg.MaxBackoff)
		s.setRetry(x.Name, s.clock.Now().Add(d))
		log.Warn().Err(err).Dur("retry_in", d).Msg("delete prepared instance failed; will retry")
		return
	}
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(s.work), s.cfg.Timeouts.StateWrite)
	defer wcancel()
	if err := s.st.Update(wctx, func(tx fleet.Tx) error { return tx.DeletePrepared(x.Name) }); err != nil {
		log.Error().Err(err).Msg("record deleted prepared instance")
		return
	}
	s.setRetry(x.Name, time.Time{})
	log.Info().Str("reason", x.Reason).Msg("prepared instance deleted")
}

// updatePrepared changes one prepared instance's row outside a step; a
// row that is gone (a job took it) is left gone.
func (s *Scheduler) updatePrepared(name string, fn func(*fleet.Prepared)) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.work), s.cfg.Timeouts.StateWrite)
	defer cancel()
	return s.st.Update(ctx, func(tx fleet.Tx) error {
		all, err := tx.PreparedInstances()
		if err != nil {
			return err
		}
		for _, p := range all {
			if p.Name == name {
				fn(&p)
				return tx.PutPrepared(p)
			}
		}
		return nil
	})
}

// waitFreed waits until the named runner is no longer live: its instance
// is deleted, and its slot free.
func (s *Scheduler) waitFreed(ctx context.Context, name string) error {
	for {
		s.mu.Lock()
		freed := s.freed
		s.mu.Unlock()
		live := false
		err := s.st.View(ctx, func(tx fleet.Tx) error {
			r, err := tx.Runner(name)
			if errors.Is(err, fleet.ErrNotFound) {
				return nil
			}
			live = err == nil && r.Live()
			return err
		})
		if err != nil {
			return fmt.Errorf("wait for the slot of %s: %w", name, err)
		}
		if !live {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the slot of %s: %w", name, ctx.Err())
		case <-freed:
		case <-s.clock.After(time.Second):
		}
	}
}

// noteFreed wakes the launches waiting for a slot: a teardown ended.
func (s *Scheduler) noteFreed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.freed)
	s.freed = make(chan struct{})
}

// unpair forgets that a launch waits for the slot of runner after.
func (s *Scheduler) unpair(after string) {
	if after == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pairs, after)
}
