// Package scheduler turns recorded workflow_job deliveries into runner
// instances: it applies deliveries to the durable state, decides launches
// and teardowns with the pure Decide, and carries them out against LXD and
// GitHub through the small interfaces declared in ports.go.
package scheduler

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store"
)

// Clock gives the time; tests inject a fake one.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now().UTC() }

// RealClock is the wall clock.
var RealClock Clock = realClock{}

// stepCoalesce is how long a kick waits for more deliveries before a step.
const stepCoalesce = 10 * time.Millisecond

// maxApplyBatch caps the deliveries one step applies.
const maxApplyBatch = 128

// Scheduler owns the loop.
type Scheduler struct {
	cfg   Config
	st    *store.Store
	lxd   Instances
	gh    GitHub
	clock Clock
	log   zerolog.Logger
	m     Metrics

	kick chan struct{}
	wg   sync.WaitGroup
	// work is the parent context of workers: it outlives Run's ctx by
	// ShutdownGrace, so a launch in flight at shutdown can finish.
	work     context.Context
	stopWork context.CancelFunc

	mu       sync.Mutex
	inflight map[string]bool      // runner names with a worker running
	retryAt  map[string]time.Time // runner name -> earliest next teardown attempt
	failures map[string]int       // pool -> consecutive launch failures
	notAfter map[string]time.Time // pool -> no launch before

	// orgs that warm pools serve: loaded once, then grown by apply. Only
	// the loop goroutine touches it.
	orgs       map[store.Org]bool
	orgsLoaded bool
	warm       bool // some pool has min_idle
}

// New builds a scheduler. cfg is validated and defaulted here.
func New(cfg Config, st *store.Store, lxd Instances, gh GitHub, clock Clock, log zerolog.Logger) (*Scheduler, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if clock == nil {
		clock = RealClock
	}
	work, stopWork := context.WithCancel(context.Background())
	return &Scheduler{
		m:    nopMetrics{},
		work: work, stopWork: stopWork,
		cfg: cfg, st: st, lxd: lxd, gh: gh, clock: clock,
		log:      log.With().Str("component", "scheduler").Logger(),
		kick:     make(chan struct{}, 1),
		inflight: map[string]bool{},
		retryAt:  map[string]time.Time{},
		failures: map[string]int{},
		notAfter: map[string]time.Time{},
		orgs:     map[store.Org]bool{},
		warm:     slices.ContainsFunc(cfg.Pools, func(p Pool) bool { return p.MinIdle > 0 }),
	}, nil
}

// SetDrain stops (or resumes) launches in a pool. Runners already running
// finish their jobs. It is kept across restarts.
func (s *Scheduler) SetDrain(ctx context.Context, pool string, drain bool) error {
	if s.cfg.pool(pool) == nil {
		return fmt.Errorf("%w: %q", ErrUnknownPool, pool)
	}
	if err := s.st.SetDrained(ctx, pool, drain); err != nil {
		return err
	}
	s.log.Info().Str("pool", pool).Bool("drained", drain).Msg("pool drain changed")
	s.Notify()
	return nil
}

// SetMetrics makes the scheduler report to m. Call it before Run.
func (s *Scheduler) SetMetrics(m Metrics) {
	if m != nil {
		s.m = m
	}
}

// RecycleIdle tears down the idle runners of pools built from image that
// were launched before at: after the image was rebuilt they run the old
// one. It is the surplus teardown, so a runner that just took a job stays.
func (s *Scheduler) RecycleIdle(ctx context.Context, image string, at time.Time) error {
	pools := map[string]bool{}
	for _, p := range s.cfg.Pools {
		if p.Image == image {
			pools[p.Name] = true
		}
	}
	if len(pools) == 0 {
		return nil
	}
	n := 0
	err := s.st.Update(ctx, func(tx *store.Tx) error {
		live, err := tx.LiveRunners()
		if err != nil {
			return err
		}
		for _, r := range live {
			if !pools[r.Pool] || r.State != store.RunnerStarted || !r.CreatedAt.Before(at) {
				continue
			}
			r.State, r.DeleteMode, r.Reason = store.RunnerDeleting, ModeSurplus, "image "+image+" rebuilt"
			if err := tx.PutRunner(r); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recycle idle runners of image %s: %w", image, err)
	}
	if n > 0 {
		s.log.Info().Str("image", image).Int("runners", n).Msg("recycling idle runners on the old image")
		s.Notify()
	}
	return nil
}

// ErrUnknownPool is returned for a pool name not in the configuration.
var ErrUnknownPool = errors.New("unknown pool")

// Config returns the scheduler's configuration, defaults filled in.
func (s *Scheduler) Config() Config { return s.cfg }

// Notify wakes the loop: new deliveries are recorded. It never blocks.
func (s *Scheduler) Notify() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run runs the loop until ctx ends, then gives the workers in flight
// ShutdownGrace to finish before cancelling them. A cancelled launch cleans
// up after itself and its job stays queued for the next start.
func (s *Scheduler) Run(ctx context.Context) error {
	defer func() {
		t := time.AfterFunc(s.cfg.ShutdownGrace, s.stopWork)
		s.wg.Wait()
		t.Stop()
		s.stopWork()
	}()
	if err := s.Reconcile(ctx); err != nil {
		s.log.Warn().Err(err).Msg("reconcile at start failed; will retry")
	}
	tick := time.NewTicker(time.Second) // timers and retries
	defer tick.Stop()
	rec := time.NewTicker(s.cfg.ReconcileInterval)
	defer rec.Stop()
	online := time.NewTicker(s.cfg.OnlineCheckInterval)
	defer online.Stop()
	var checking atomic.Bool
	for {
		if err := s.Step(ctx); err != nil && ctx.Err() == nil {
			s.log.Error().Err(err).Msg("scheduler step failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
			// Coalesce a burst of deliveries into one step: each step is a
			// transaction (and an fsync) that the webhook's group commit
			// waits behind.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(stepCoalesce):
			}
		case <-tick.C:
		case <-online.C:
			// Off the loop: GitHub may be slow, and steps must not wait.
			if checking.CompareAndSwap(false, true) {
				s.wg.Go(func() {
					defer checking.Store(false)
					s.checkOnline(s.work)
				})
			}
		case <-rec.C:
			if err := s.Reconcile(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn().Err(err).Msg("reconcile failed")
			}
		}
	}
}

// Step applies pending deliveries, decides, records the decision and starts
// workers for it. All state changes of a step happen in one transaction
// before any outside call, so a crash at any point repeats or resumes work
// without doubling it.
func (s *Scheduler) Step(ctx context.Context) error {
	now := s.clock.Now()
	var launch []store.Runner
	var teardown []store.Runner
	more := false
	err := s.st.Update(ctx, func(tx *store.Tx) error {
		// A bounded batch keeps the transaction short: while it is open, the
		// webhook's group commit (so every webhook answer) waits for it.
		pending, err := tx.PendingDeliveries(maxApplyBatch)
		if err != nil {
			return err
		}
		more = len(pending) == maxApplyBatch
		for _, d := range pending {
			if err := s.apply(tx, d, now); err != nil {
				return err
			}
			if err := tx.MarkApplied(d.Seq); err != nil {
				return err
			}
		}
		queued, err := tx.QueuedJobs()
		if err != nil {
			return err
		}
		live, err := tx.LiveRunners()
		if err != nil {
			return err
		}
		var orgs []store.Org
		if s.warm {
			if !s.orgsLoaded {
				known, err := tx.JobOrgs()
				if err != nil {
					return err
				}
				for _, o := range known {
					s.orgs[o] = true
				}
				s.orgsLoaded = true
			}
			for _, j := range queued {
				s.orgs[store.Org{InstallationID: j.InstallationID, Login: j.Org}] = true
			}
			for o := range s.orgs {
				orgs = append(orgs, o)
			}
			slices.SortFunc(orgs, func(a, b store.Org) int { return strings.Compare(a.Login, b.Login) })
		}
		s.mu.Lock()
		notBefore := make(map[string]time.Time, len(s.notAfter))
		for k, v := range s.notAfter {
			notBefore[k] = v
		}
		s.mu.Unlock()
		drained, err := tx.Drained()
		if err != nil {
			return err
		}
		dec := Decide(s.cfg, Snapshot{Now: now, Queued: queued, Runners: live, NotBefore: notBefore, Orgs: orgs, Drained: drained})

		byName := make(map[string]store.Runner, len(live))
		for _, r := range live {
			byName[r.Name] = r
		}
		for _, l := range dec.Launches {
			r := store.Runner{
				Name: s.newName(l.Pool), Pool: l.Pool, InstallationID: l.InstallationID, Org: l.Org,
				JobID: l.JobID, State: store.RunnerLaunching, CreatedAt: now,
			}
			if err := tx.PutRunner(r); err != nil {
				return err
			}
			if err := tx.AddEvent(l.JobID, now, "launched", "instance "+r.Name); err != nil {
				return err
			}
			launch = append(launch, r)
		}
		for _, t := range dec.Teardowns {
			r := byName[t.Runner]
			r.State, r.DeleteMode, r.Reason = store.RunnerDeleting, t.Mode, t.Reason
			if err := tx.PutRunner(r); err != nil {
				return err
			}
			if err := tx.AddEvent(s.jobOf(tx, r), now, "teardown", r.Name+": "+t.Reason); err != nil {
				return err
			}
			byName[r.Name] = r
		}
		for _, r := range byName {
			if r.State == store.RunnerDeleting {
				teardown = append(teardown, r)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("step: %w", err)
	}
	if more {
		s.Notify()
	}
	for _, r := range launch {
		s.log.Info().Str("pool", r.Pool).Int64("job_id", r.JobID).Str("instance", r.Name).Msg("launching runner")
		s.start(r, s.launch)
	}
	for _, r := range teardown {
		s.mu.Lock()
		wait := now.Before(s.retryAt[r.Name])
		s.mu.Unlock()
		if !wait {
			s.start(r, s.teardown)
		}
	}
	return nil
}

// start runs fn for r in its own goroutine unless one is already running.
func (s *Scheduler) start(r store.Runner, fn func(store.Runner)) {
	s.mu.Lock()
	if s.inflight[r.Name] {
		s.mu.Unlock()
		return
	}
	s.inflight[r.Name] = true
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn(r)
		s.mu.Lock()
		delete(s.inflight, r.Name)
		s.mu.Unlock()
		s.Notify()
	}()
}

func (s *Scheduler) newName(pool string) string {
	var b [4]byte
	_, _ = crand.Read(b[:]) // crypto/rand.Read never fails
	return s.cfg.NamePrefix + pool + "-" + hex.EncodeToString(b[:])
}

// update changes one runner row in its own transaction.
func (s *Scheduler) update(name string, fn func(*store.Runner) bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.work), 30*time.Second)
	defer cancel()
	return s.st.Update(ctx, func(tx *store.Tx) error {
		r, err := tx.Runner(name)
		if err != nil {
			return err
		}
		if !fn(&r) {
			return nil
		}
		return tx.PutRunner(r)
	})
}

// backoff returns the wait after n consecutive failures: capped exponential
// with full jitter over its upper half, so retries from many pools spread.
func backoff(n int, max time.Duration) time.Duration {
	d := time.Second << min(n, 10)
	if d > max || d <= 0 {
		d = max
	}
	return d/2 + rand.N(d/2+1)
}

func (s *Scheduler) launchFailed(pool string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[pool]++
	d := backoff(s.failures[pool]-1, s.cfg.MaxBackoff)
	s.notAfter[pool] = s.clock.Now().Add(d)
	return d
}

func (s *Scheduler) launchSucceeded(pool string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.failures, pool)
	delete(s.notAfter, pool)
}

// launch makes one runner: a JIT config from GitHub, then the instance. On
// failure everything made is removed, the runner row is marked failed, and
// the pool backs off; the job stays queued, so it is never lost.
func (s *Scheduler) launch(r store.Runner) {
	log := s.log.With().Str("pool", r.Pool).Int64("job_id", r.JobID).Str("instance", r.Name).Logger()
	pool := s.cfg.pool(r.Pool)
	ctx, cancel := context.WithTimeout(s.work, s.cfg.LaunchTimeout)
	defer cancel()

	fail := func(stage string, err error) {
		wait := s.launchFailed(r.Pool)
		log.Error().Err(err).Str("stage", stage).Dur("retry_in", wait).Msg("launch failed; the job stays queued")
		s.event(r.JobID, "launch_failed", fmt.Sprintf("%s %s: %v; retry in %v", r.Name, stage, err, wait.Round(time.Second)))
		if stage == "create" {
			// The answer may be lost rather than the work: after an LXD
			// restart, say, the instance can be running and its runner
			// already holding a job. So it is torn down like a surplus
			// runner: GitHub's record first, kept if GitHub says it is busy.
			if err := s.update(r.Name, func(x *store.Runner) bool {
				if x.State != store.RunnerLaunching {
					return false // an in_progress event claimed it meanwhile
				}
				x.State, x.DeleteMode, x.Reason = store.RunnerDeleting, ModeSurplus, "launch failed: "+err.Error()
				return true
			}); err != nil {
				log.Error().Err(err).Msg("record failed launch")
			}
			return
		}
		if r.RunnerID != 0 {
			cctx, ccancel := context.WithTimeout(context.WithoutCancel(s.work), 20*time.Second)
			defer ccancel()
			if err := s.gh.RemoveRunner(cctx, r.InstallationID, r.Org, r.RunnerID); err != nil {
				log.Warn().Err(err).Msg("remove runner record after failed launch; reconcile will retry")
			}
		}
		if err := s.update(r.Name, func(x *store.Runner) bool {
			x.State, x.Reason, x.EndedAt = store.RunnerFailed, stage+": "+err.Error(), s.clock.Now()
			return true
		}); err != nil {
			log.Error().Err(err).Msg("record failed launch")
		}
	}

	jit, err := s.gh.GenerateJITConfig(ctx, JITRequest{
		InstallationID: r.InstallationID, Org: r.Org, Name: r.Name, Labels: pool.Labels,
	})
	if err != nil {
		s.m.Launch(r.Pool, "error", 0)
		fail("jit_config", err)
		return
	}
	r.RunnerID = jit.RunnerID
	// Record the GitHub runner id before creating the instance: a crash from
	// here on leaves enough to remove the record.
	if err := s.update(r.Name, func(x *store.Runner) bool { x.RunnerID = jit.RunnerID; return true }); err != nil {
		fail("record", err)
		return
	}

	cfg := make(map[string]string, len(pool.Config)+5)
	for k, v := range pool.Config {
		cfg[k] = v
	}
	cfg[KeyManaged] = "true"
	cfg[KeyOwner] = s.cfg.NamePrefix
	cfg[KeyPool] = r.Pool
	cfg[KeyJobID] = strconv.FormatInt(r.JobID, 10)
	cfg[KeyCreatedAt] = r.CreatedAt.UTC().Format(time.RFC3339)
	cfg[KeyRunnerID] = strconv.FormatInt(jit.RunnerID, 10)
	cfg[KeyOrg] = r.Org
	cfg[KeyInstall] = strconv.FormatInt(r.InstallationID, 10)
	spec := InstanceSpec{
		Name: r.Name, Image: pool.Image, SourceInstance: pool.SourceInstance, Type: pool.Type,
		Architecture: pool.Architecture, Target: pool.Target, Profiles: pool.Profiles,
		Config: cfg, JITConfig: jit.Config,
	}
	began := time.Now()
	err = s.lxd.Create(ctx, spec)
	if errors.Is(err, ErrUnreachable) {
		s.event(r.JobID, "launch_waiting", r.Name+": LXD did not answer; keeping the registration until it does")
		err = s.awaitLXD(ctx, log, spec, err)
	}
	if err != nil {
		s.m.Launch(r.Pool, "error", time.Since(began))
		fail("create", err)
		return
	}
	s.m.Launch(r.Pool, "ok", time.Since(began))
	s.launchSucceeded(r.Pool)
	err = s.update(r.Name, func(x *store.Runner) bool {
		x.StartedAt = s.clock.Now()
		if x.State == store.RunnerLaunching { // else an in_progress event already claimed it
			x.State = store.RunnerStarted
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
func (s *Scheduler) awaitLXD(ctx context.Context, log zerolog.Logger, spec InstanceSpec, err error) error {
	log.Warn().Err(err).Msg("LXD did not answer the create; keeping the runner's registration until it does")
	for attempt := 0; errors.Is(err, ErrUnreachable); attempt++ {
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		// Asking LXD costs one GET: a short cap brings the launch back soon
		// after the daemon is.
		case <-time.After(backoff(attempt, min(s.cfg.MaxBackoff, 10*time.Second))):
		}
		var in Instance
		in, err = s.lxd.Get(ctx, spec.Name)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			continue
		case in.Owner != s.cfg.NamePrefix:
			return fmt.Errorf("instance %s exists but is not ours (owner %q)", spec.Name, in.Owner)
		case in.Status == "Running":
			log.Info().Msg("LXD is back and the instance runs: adopted")
			return nil
		default:
			log.Info().Str("status", in.Status).Msg("LXD is back; the instance did not start: replacing it")
			if err = s.lxd.Delete(ctx, spec.Name); err != nil {
				continue
			}
		}
		err = s.lxd.Create(ctx, spec)
	}
	return err
}

// teardown deletes one runner as its mode demands. A failed attempt leaves
// the row in state deleting, and the loop tries again after a backoff.
func (s *Scheduler) teardown(r store.Runner) {
	log := s.log.With().Str("pool", r.Pool).Str("instance", r.Name).Str("mode", r.DeleteMode).Logger()
	ctx, cancel := context.WithTimeout(s.work, 2*time.Minute)
	defer cancel()
	retry := func(what string, err error) {
		s.mu.Lock()
		d := backoff(3, s.cfg.MaxBackoff)
		s.retryAt[r.Name] = s.clock.Now().Add(d)
		s.mu.Unlock()
		log.Warn().Err(err).Dur("retry_in", d).Msg(what + " failed; will retry")
	}
	keep := func(state, why string) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(s.work), 30*time.Second)
		defer cancel()
		err := s.st.Update(ctx, func(tx *store.Tx) error {
			x, err := tx.Runner(r.Name)
			if err != nil || x.State != store.RunnerDeleting {
				return err
			}
			x.State, x.DeleteMode, x.Reason = state, "", ""
			now := s.clock.Now()
			if state == store.RunnerBusy && x.BusyAt.IsZero() {
				x.BusyAt = now
			}
			if _, err := s.markOnline(tx, &x, now, why); err != nil {
				return err
			}
			return tx.PutRunner(x)
		})
		if err != nil {
			log.Error().Err(err).Msg("record kept runner")
			return
		}
		log.Info().Str("state", state).Msg("teardown cancelled: " + why)
		s.event(r.JobID, "teardown_cancelled", r.Name+": "+why)
	}

	switch r.DeleteMode {
	case ModeRegistration:
		if r.RunnerID != 0 {
			st, err := s.gh.Runner(ctx, r.InstallationID, r.Org, r.RunnerID)
			switch {
			case err == nil && st.Busy:
				keep(store.RunnerBusy, "runner is busy at GitHub")
				return
			case err == nil && st.Online:
				keep(store.RunnerStarted, "runner is online at GitHub")
				return
			case err != nil && !errors.Is(err, ErrNotFound):
				retry("check runner", err)
				return
			}
		}
		fallthrough
	case ModeSurplus:
		if r.RunnerID != 0 {
			err := s.gh.RemoveRunner(ctx, r.InstallationID, r.Org, r.RunnerID)
			switch {
			case errors.Is(err, ErrRunnerBusy):
				keep(store.RunnerBusy, "runner took a job")
				return
			case err != nil:
				retry("remove runner record", err)
				return
			}
		}
	}

	// The GitHub record is gone (or the runner's job is over): delete the
	// instance, unless an in_progress event claimed the runner meanwhile.
	var still bool
	err := s.st.View(ctx, func(tx *store.Tx) error {
		x, err := tx.Runner(r.Name)
		still = err == nil && x.State == store.RunnerDeleting
		return err
	})
	if err != nil || !still {
		return
	}
	if err := s.lxd.Delete(ctx, r.Name); err != nil {
		retry("delete instance", err)
		return
	}
	if r.DeleteMode == ModeForce && r.RunnerID != 0 {
		if err := s.gh.RemoveRunner(ctx, r.InstallationID, r.Org, r.RunnerID); err != nil && !errors.Is(err, ErrRunnerBusy) {
			log.Warn().Err(err).Msg("remove runner record after forced delete")
		}
	}
	if err := s.update(r.Name, func(x *store.Runner) bool {
		x.State, x.EndedAt = store.RunnerDeleted, s.clock.Now()
		return true
	}); err != nil {
		log.Error().Err(err).Msg("record deleted runner")
		return
	}
	if r.DeleteMode == ModeRegistration {
		s.countAttempt(r, log)
	}
	s.mu.Lock()
	delete(s.retryAt, r.Name)
	s.mu.Unlock()
	log.Info().Str("reason", r.Reason).Msg("instance deleted")
	s.m.Teardown(r.Pool, r.DeleteMode)
	var job int64
	_ = s.st.View(ctx, func(tx *store.Tx) error { job = s.jobOf(tx, r); return nil })
	s.event(job, "instance_deleted", r.Name+": "+r.Reason)
}

// countAttempt charges a runner that never came online to the job it was
// launched for. After MaxAttempts such runners the job is given up: the
// image or the network is broken, and relaunching forever only hides it.
func (s *Scheduler) countAttempt(r store.Runner, log zerolog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.work), 30*time.Second)
	defer cancel()
	err := s.st.Update(ctx, func(tx *store.Tx) error {
		j, err := tx.Job(r.JobID)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil || j.State != store.JobQueued {
			return err
		}
		j.Attempts++
		if j.Attempts >= s.cfg.MaxAttempts {
			j.State = store.JobAbandoned
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

// jobOf returns the job a runner's timeline events belong to: the job that
// ran on it if any, else the job whose queued event caused its launch.
func (s *Scheduler) jobOf(tx *store.Tx, r store.Runner) int64 {
	if j, err := tx.JobByRunner(r.Name); err == nil {
		return j.ID
	}
	return r.JobID
}

// event appends to a job's timeline outside a step; a failure is logged,
// since the timeline is for people and must not stop the work.
func (s *Scheduler) event(jobID int64, kind, detail string) {
	if jobID == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.work), 10*time.Second)
	defer cancel()
	if err := s.st.AddEvent(ctx, jobID, s.clock.Now(), kind, detail); err != nil {
		s.log.Warn().Err(err).Int64("job_id", jobID).Msg("record timeline event")
	}
}
