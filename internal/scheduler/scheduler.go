// Package scheduler turns recorded workflow_job deliveries into runner
// instances: it applies deliveries to the durable state (apply.go),
// decides launches and teardowns with the pure Decide (decide.go), and
// carries them out through the fleet ports: launching (launch.go), tearing
// down (teardown.go), reconciling with LXD and GitHub (reconcile.go) and
// noticing runners come online (online.go).
package scheduler

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// maxApplyBatch caps the deliveries one step applies: while its
// transaction is open, the webhook's group commit (so every webhook
// answer) waits for it.
const maxApplyBatch = 128

// Deps are the scheduler's ports.
type Deps struct {
	State     fleet.State
	Instances fleet.Instances
	GitHub    fleet.GitHub
	// Cluster, when set, lets the scheduler place runners on LXD's
	// members itself (see Placement); nil: LXD places them.
	Cluster fleet.Cluster
	Metrics fleet.Metrics // nil: none
	Clock   fleet.Clock   // nil: the wall clock
	Log     zerolog.Logger
}

// Scheduler owns the loop.
type Scheduler struct {
	cfg   Config
	st    fleet.State
	lxd   fleet.Instances
	gh    fleet.GitHub
	m     fleet.Metrics
	clock fleet.Clock
	log   zerolog.Logger

	kick chan struct{}
	*workers
	cl *cluster

	// hold, when set, is why no pool may launch now (in memory only).
	hold atomic.Pointer[string]

	// orgs that warm pools serve when no installation is known yet (the
	// App's installations were never listed, and no installation webhook
	// came): those jobs were routed for, loaded once, then grown by each
	// step. Only the loop goroutine touches it.
	orgs       map[fleet.Org]bool
	orgsLoaded bool
	warm       bool // some pool has min_idle
	prepared   bool // some pool keeps prepared instances

	// images is what each image of a pool with prepared instances stands
	// for now, by image; pairs are the runners being torn down whose slot
	// a launch waits for, by that runner; freed is closed and replaced
	// whenever a teardown ends.
	mu     sync.Mutex
	images map[string]string
	pairs  map[string]string
	freed  chan struct{}
}

// New builds a scheduler. cfg is validated and defaulted here.
func New(cfg Config, d Deps) (*Scheduler, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.State == nil || d.Instances == nil || d.GitHub == nil {
		return nil, errors.New("scheduler: state, instances and github are required")
	}
	if d.Metrics == nil {
		d.Metrics = fleet.NopMetrics{}
	}
	if d.Clock == nil {
		d.Clock = fleet.WallClock
	}
	return &Scheduler{
		cfg: cfg, st: d.State, lxd: d.Instances, gh: d.GitHub, m: d.Metrics, clock: d.Clock,
		log:      d.Log.With().Str("component", "scheduler").Logger(),
		kick:     make(chan struct{}, 1),
		workers:  newWorkers(),
		cl:       newCluster(d.Cluster),
		orgs:     map[fleet.Org]bool{},
		warm:     slices.ContainsFunc(cfg.Pools, func(p Pool) bool { return p.MinIdle > 0 }),
		prepared: slices.ContainsFunc(cfg.Pools, func(p Pool) bool { return p.Prepared > 0 }),
		images:   map[string]string{},
		pairs:    map[string]string{},
		freed:    make(chan struct{}),
	}, nil
}

// Hold stops every pool from launching, for reason, until Release: e.g.
// while the pools' runner groups cannot be checked at GitHub. Deliveries
// are still applied, and teardowns and timers go on; queued jobs wait and
// say why. It is not kept across restarts.
func (s *Scheduler) Hold(reason string) { s.hold.Store(&reason) }

// Release ends a Hold.
func (s *Scheduler) Release() {
	if s.hold.Swap(nil) != nil {
		s.Notify()
	}
}

// Held returns why launches are held, or "" when they are not.
func (s *Scheduler) Held() string {
	if r := s.hold.Load(); r != nil {
		return *r
	}
	return ""
}

// Config returns the scheduler's configuration, defaults filled in.
func (s *Scheduler) Config() Config { return s.cfg }

// Notify wakes the loop: new deliveries are recorded. It never blocks.
func (s *Scheduler) Notify() {
	select {
	case s.kick <- struct{}{}:
	default:
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
	err := s.st.Update(ctx, func(tx fleet.Tx) error {
		n = 0
		live, err := tx.LiveRunners()
		if err != nil {
			return err
		}
		for _, r := range live {
			if !pools[r.Pool] || r.State != fleet.RunnerStarted || !r.CreatedAt.Before(at) {
				continue
			}
			r.State, r.DeleteMode, r.Reason = fleet.RunnerDeleting, fleet.ModeSurplus, "image "+image+" rebuilt"
			if err := tx.PutRunner(r); err != nil {
				return err
			}
			n++
		}
		prepared, err := tx.PreparedInstances()
		if err != nil {
			return err
		}
		for _, p := range prepared {
			if !pools[p.Pool] || p.State == fleet.PreparedDeleting || !p.CreatedAt.Before(at) {
				continue
			}
			p.State, p.Reason = fleet.PreparedDeleting, "image "+image+" rebuilt"
			if err := tx.PutPrepared(p); err != nil {
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
		s.log.Info().Str("image", image).Int("instances", n).Msg("recycling idle runners and prepared instances on the old image")
		s.Notify()
	}
	return nil
}

// Run runs the loop until ctx ends, then gives the workers in flight
// ShutdownGrace to finish before cancelling them. A cancelled launch cleans
// up after itself and its job stays queued for the next start.
//
// Run may be called again after it returned (a replica that leads again
// after losing the lead): each run starts with no worker and no memory of
// the last, as after a restart.
func (s *Scheduler) Run(ctx context.Context) error {
	s.workers, s.orgs, s.orgsLoaded = newWorkers(), map[fleet.Org]bool{}, false
	s.cl = newCluster(s.cl.port)
	s.mu.Lock()
	s.pairs = map[string]string{}
	s.mu.Unlock()
	defer s.stop(s.clock, s.cfg.Timeouts.ShutdownGrace)
	// The App's installations and the pools' images are read beside the
	// first reconcile, off the loop: warm and prepared instances are made
	// as soon as they are known.
	var listing, looking atomic.Bool
	listInstallations := func() {
		if s.warm && listing.CompareAndSwap(false, true) {
			s.wg.Go(func() {
				defer listing.Store(false)
				s.refreshInstallations(s.work)
			})
		}
	}
	lookUpImages := func() {
		if s.prepared && looking.CompareAndSwap(false, true) {
			s.wg.Go(func() {
				defer looking.Store(false)
				s.refreshImages(s.work)
			})
		}
	}
	listInstallations()
	lookUpImages()
	if err := s.Reconcile(ctx); err != nil {
		s.log.Warn().Err(err).Msg("reconcile at start failed; will retry")
	}
	tick := s.clock.NewTicker(time.Second) // timers and retries
	defer tick.Stop()
	rec := s.clock.NewTicker(s.cfg.ReconcileInterval)
	defer rec.Stop()
	online := s.clock.NewTicker(s.cfg.OnlineCheckInterval)
	defer online.Stop()
	members := s.clock.NewTicker(s.cfg.ClusterInterval)
	defer members.Stop()
	installs := s.clock.NewTicker(s.cfg.InstallationsInterval)
	defer installs.Stop()
	images := s.clock.NewTicker(s.cfg.ImageInterval)
	defer images.Stop()
	var checking, reading atomic.Bool
	for {
		if err := s.Step(ctx); err != nil && ctx.Err() == nil {
			s.log.Error().Err(err).Msg("scheduler step failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
			// Coalesce a burst of deliveries into one step.
			if fleet.Sleep(ctx, s.clock, s.cfg.Timeouts.StepCoalesce) != nil {
				return nil
			}
		case <-tick.C():
		case <-online.C():
			// Off the loop: GitHub may be slow, and steps must not wait.
			if checking.CompareAndSwap(false, true) {
				s.wg.Go(func() {
					defer checking.Store(false)
					s.checkOnline(s.work)
				})
			}
		case <-members.C():
			// Off the loop too: a member that stopped answering may make
			// the read wait.
			if s.cl.port != nil && reading.CompareAndSwap(false, true) {
				s.wg.Go(func() {
					defer reading.Store(false)
					s.refreshCluster(s.work, false)
				})
			}
		case <-installs.C():
			listInstallations()
		case <-images.C():
			lookUpImages()
		case <-rec.C():
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
	var launch []launchOrder
	var teardown []fleet.Runner
	var prepare, unprepare []fleet.Prepared
	more := false
	err := s.txn(ctx, func(tx fleet.Tx, m fleet.Metrics) error {
		launch, teardown, prepare, unprepare = nil, nil, nil, nil
		pending, err := tx.PendingDeliveries(maxApplyBatch)
		if err != nil {
			return err
		}
		more = len(pending) == maxApplyBatch
		for _, d := range pending {
			if err := s.apply(tx, m, d); err != nil {
				return err
			}
			if err := tx.MarkApplied(d.Seq); err != nil {
				return err
			}
		}
		snap, err := s.snapshot(tx, now)
		if err != nil {
			return err
		}
		dec := Decide(s.cfg, snap)
		if err := s.recordWaits(tx, snap, dec, now); err != nil {
			return err
		}

		queued := make(map[int64]fleet.Job, len(snap.Queued))
		for _, j := range snap.Queued {
			queued[j.ID] = j
		}
		byName := make(map[string]fleet.Runner, len(snap.Runners))
		for _, r := range snap.Runners {
			byName[r.Name] = r
		}
		for _, l := range dec.Launches {
			r := fleet.Runner{
				Name: s.newName(l.Pool), Pool: l.Pool, InstallationID: l.InstallationID, Org: l.Org,
				JobID: l.JobID, State: fleet.RunnerLaunching, CreatedAt: now,
			}
			how := "instance " + r.Name
			if l.Prepared != "" {
				// The prepared instance becomes this runner: its row goes
				// in the same transaction as the runner's is written.
				r.Name, how = l.Prepared, "prepared instance "+l.Prepared
				if err := tx.DeletePrepared(l.Prepared); err != nil {
					return err
				}
			}
			if l.After != "" {
				how += ", once " + l.After + " is deleted"
			}
			if err := tx.PutRunner(r); err != nil {
				return err
			}
			if err := tx.AddEvent(l.JobID, now, "launched", how); err != nil {
				return err
			}
			var recheck *fleet.Job
			if j, ok := queued[l.JobID]; ok && l.JobID != 0 && now.Sub(j.QueuedAt) > s.cfg.RecheckQueuedAfter {
				recheck = &j
			}
			if l.Member != "" {
				s.setWhere(r.Name, l.Member)
			}
			launch = append(launch, launchOrder{r, recheck, l.Member, l.Prepared != "", l.After})
		}
		if err := s.recordPrepared(tx, snap, dec, now, &prepare, &unprepare); err != nil {
			return err
		}
		for _, t := range dec.Teardowns {
			r := byName[t.Runner]
			r.State, r.DeleteMode, r.Reason = fleet.RunnerDeleting, t.Mode, t.Reason
			if err := tx.PutRunner(r); err != nil {
				return err
			}
			if err := tx.AddEvent(jobOf(tx, r), now, "teardown", r.Name+": "+t.Reason); err != nil {
				return err
			}
			byName[r.Name] = r
		}
		for _, r := range byName {
			if r.State != fleet.RunnerDeleting {
				continue
			}
			// On a member that does not answer, only what GitHub holds can
			// go now; the instance waits for the member.
			if _, lost := snap.Placement.lost(r); lost && !r.DeleteMode.Checked() {
				continue
			}
			teardown = append(teardown, r)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("step: %w", err)
	}
	if more {
		s.Notify()
	}
	for _, l := range launch {
		ev := s.log.Info().Str("pool", l.r.Pool).Int64("job_id", l.r.JobID).Str("instance", l.r.Name).Bool("prepared", l.prepared)
		if l.member != "" {
			ev = ev.Str("member", l.member)
		}
		if l.after != "" {
			s.mu.Lock()
			s.pairs[l.after] = l.r.Name
			s.mu.Unlock()
			ev = ev.Str("after", l.after)
		}
		ev.Msg("launching runner")
		s.start(l.r, func(r fleet.Runner) { s.launch(r, l) }, s.Notify)
	}
	s.startPrepared(now, prepare, unprepare)
	for _, r := range teardown {
		if !now.Before(s.retryAt(r.Name)) {
			s.start(r, s.teardown, s.Notify)
		}
	}
	return nil
}

// launchOrder is one launch a step decided: the runner, and the job it is
// for when that job waited long enough to be asked about first.
type launchOrder struct {
	r        fleet.Runner
	recheck  *fleet.Job
	member   string // the cluster member to launch on; empty: the pool's target
	prepared bool   // r.Name is a prepared instance to start
	after    string // a runner being deleted whose slot the launch waits for
}

// snapshot reads what Decide needs.
func (s *Scheduler) snapshot(tx fleet.Tx, now time.Time) (Snapshot, error) {
	snap := Snapshot{Now: now, NotBefore: s.notBefore(), PrepareNotBefore: s.prepareNotBefore()}
	var err error
	if snap.Queued, err = tx.QueuedJobs(); err != nil {
		return snap, err
	}
	if snap.Runners, err = tx.LiveRunners(); err != nil {
		return snap, err
	}
	if snap.Drained, err = tx.Drained(); err != nil {
		return snap, err
	}
	if s.Held() != "" {
		for _, p := range s.cfg.Pools {
			snap.Drained[p.Name] = true
		}
	}
	if s.cl.port != nil {
		members, err := tx.DrainedMembers()
		if err != nil {
			return snap, err
		}
		snap.Placement = s.placement(members)
	}
	if s.warm {
		if snap.Orgs, err = s.warmOrgs(tx, snap.Queued); err != nil {
			return snap, err
		}
	}
	if snap.Prepared, err = tx.PreparedInstances(); err != nil {
		return snap, err
	}
	s.mu.Lock()
	snap.Images = maps.Clone(s.images)
	snap.Paired = make(map[string]bool, len(s.pairs))
	for after := range s.pairs {
		snap.Paired[after] = true
	}
	s.mu.Unlock()
	return snap, nil
}

func (s *Scheduler) newName(pool string) string {
	var b [4]byte
	_, _ = crand.Read(b[:]) // crypto/rand.Read never fails
	return s.cfg.NamePrefix + pool + "-" + hex.EncodeToString(b[:])
}

// recordWaits writes, on each queued job, why the cluster keeps it
// waiting (and clears it when that ends), with a timeline step when the
// reason changes; and reports, once, each runner with a job whose member
// does not answer: its job fails at GitHub and is not run again here.
func (s *Scheduler) recordWaits(tx fleet.Tx, snap Snapshot, dec Decision, now time.Time) error {
	for _, j := range snap.Queued {
		want := dec.Waiting[j.ID]
		if j.Reason == want {
			continue
		}
		j.Reason = want
		if err := tx.PutJob(j); err != nil {
			return err
		}
		if want == "" {
			continue
		}
		s.log.Info().Int64("job_id", j.ID).Str("pool", j.Pool).Str("reason", want).Msg("job waits")
		if err := tx.AddEvent(j.ID, now, "waiting", want); err != nil {
			return err
		}
	}
	for _, l := range dec.Lost {
		why := "runner " + l.Runner + " lost: cluster member " + l.Member + " does not answer; GitHub fails its job, and the service does not run it again (re-run the workflow)"
		// What is reported is in the state (a step's transaction may run
		// again), but for a runner with no job, which only the log says.
		j, err := tx.JobByRunner(l.Runner)
		switch {
		case errors.Is(err, fleet.ErrNotFound):
			if s.firstReport(l.Runner) {
				s.log.Warn().Str("instance", l.Runner).Str("member", l.Member).Msg("runner lost with its cluster member")
			}
			continue
		case err != nil:
			return err
		}
		if j.Reason == why || (j.State == fleet.JobCompleted && j.Conclusion == "success") {
			continue // reported, or it ended well before its member was lost
		}
		s.log.Warn().Int64("job_id", j.ID).Str("instance", l.Runner).Str("member", l.Member).Msg("runner lost with its cluster member: GitHub fails its job")
		j.Reason = why
		if err := tx.PutJob(j); err != nil {
			return err
		}
		if err := tx.AddEvent(j.ID, now, "runner_lost", why); err != nil {
			return err
		}
	}
	return nil
}
