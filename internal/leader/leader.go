// Package leader elects the one replica that decides and acts, when
// several share a PostgreSQL database: every replica takes webhooks, but
// Decide is global over the limits and warm pools, so two deciders would
// over-launch.
//
// Leadership is a lease row in the database (holder, epoch, expiry by the
// database's clock), renewed every TTL/3. The leader measures its lease by
// its own monotonic clock from the moment it asked for it: it cannot have
// expired before then plus TTL. A guard on every outside call (LXD,
// GitHub) refuses calls after that point less a margin, cancels the calls
// in flight when it passes (the term ends then), and has the LXD and
// GitHub clients refuse each request after it, so a leader that
// stopped renewing (a partition, a long pause, SIGSTOP) makes no call once
// a follower may have taken over. A call of a leader that keeps renewing
// may take longer than the lease: launching an instance does.
// Its writes are fenced too (internal/store's Fence): each transaction
// checks the epoch.
package leader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// Leases is what the elector needs from the shared database;
// internal/store's Leases satisfies it.
type Leases interface {
	// TryLead takes the lease for holder when it is free or expired, under
	// a new epoch; ok is false when another replica holds it.
	TryLead(ctx context.Context, holder string, ttl time.Duration) (epoch int64, ok bool, err error)
	// Renew extends the lease; fleet.ErrNotLeader when it was lost.
	Renew(ctx context.Context, holder string, epoch int64, ttl time.Duration) error
	// Resign gives the lease up at once.
	Resign(ctx context.Context, holder string, epoch int64) error
}

// Metrics is what the elector reports; internal/metrics satisfies it.
type Metrics interface {
	LeaderRole(leading bool)
	LeaderChange()
	LeaseRenewal(result string)
}

// DefaultTTL is the lease time: a follower takes over within it (plus a
// campaign interval) after the leader stops renewing.
const DefaultTTL = 3 * time.Second

// Config configures an Elector.
type Config struct {
	Holder string        // this replica's name, unique among replicas; default host-pid-random
	TTL    time.Duration // default DefaultTTL
}

// Elector campaigns for the lease and runs the leader's work while it
// holds it.
type Elector struct {
	cfg     Config
	leases  Leases
	clock   fleet.Clock
	m       Metrics
	log     zerolog.Logger
	onEpoch func(int64)

	mu         sync.Mutex
	epoch      int64     // 0: not leading
	validUntil time.Time // no call after this
	since      time.Time
	// termCtx ends with the term: when the lease is lost or lapses, at
	// the latest at validUntil. Calls in flight end with it.
	termCtx context.Context
}

// New builds an elector. onEpoch, when set, is told each new epoch and 0
// when a term ends (e.g. the store's Fence.SetEpoch).
func New(cfg Config, leases Leases, clock fleet.Clock, m Metrics, onEpoch func(int64), log zerolog.Logger) *Elector {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Holder == "" {
		cfg.Holder = DefaultHolder()
	}
	if clock == nil {
		clock = fleet.WallClock
	}
	if m == nil {
		m = nopMetrics{}
	}
	if onEpoch == nil {
		onEpoch = func(int64) {}
	}
	return &Elector{cfg: cfg, leases: leases, clock: clock, m: m, onEpoch: onEpoch,
		log: log.With().Str("component", "leader").Str("replica", cfg.Holder).Logger()}
}

// DefaultHolder names this process: host, pid and a random suffix, so a
// restarted replica never passes for its former self.
func DefaultHolder() string {
	host, _ := os.Hostname()
	var b [3]byte
	_, _ = randRead(b[:])
	return fmt.Sprintf("%s-%d-%x", host, os.Getpid(), b)
}

// Holder is this replica's name.
func (e *Elector) Holder() string { return e.cfg.Holder }

// Status says whether this replica leads, and since when.
func (e *Elector) Status() (leading bool, since time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.epoch != 0 && e.clock.Now().Before(e.validUntil), e.since
}

// margin is how long before its lease could lapse a leader stops calling
// out: room for clock rates that differ a little and a call in flight.
func (e *Elector) margin() time.Duration { return e.cfg.TTL / 6 }

// interval is how often a follower campaigns and the leader renews.
func (e *Elector) interval() time.Duration { return e.cfg.TTL / 3 }

// Run campaigns until ctx ends. Each time it wins, it runs lead with a
// context that ends when the term does (lost, lapsed or shutdown), waits
// for lead to return, and campaigns again. On shutdown a leader resigns,
// so a follower takes over at once.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context) error) error {
	e.m.LeaderRole(false)
	for {
		asked := e.clock.Now()
		cctx, cancel := context.WithTimeout(ctx, e.interval())
		epoch, ok, err := e.leases.TryLead(cctx, e.cfg.Holder, e.cfg.TTL)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			e.log.Warn().Err(err).Msg("campaign failed; trying again")
		case ok:
			if err := e.term(ctx, epoch, asked, lead); err != nil {
				return err
			}
			continue // campaign again at once: a lost lease may be free
		}
		if fleet.Sleep(ctx, e.clock, e.interval()) != nil {
			return nil
		}
	}
}

// term leads under epoch, whose lease was asked for at asked.
func (e *Elector) term(ctx context.Context, epoch int64, asked time.Time, lead func(context.Context) error) error {
	tctx, cancel := context.WithCancel(ctx)
	e.mu.Lock()
	e.epoch, e.since, e.validUntil, e.termCtx = epoch, e.clock.Now(), asked.Add(e.cfg.TTL-e.margin()), tctx
	e.mu.Unlock()
	e.onEpoch(epoch)
	e.m.LeaderRole(true)
	e.m.LeaderChange()
	e.log.Info().Int64("epoch", epoch).Msg("took the lead")

	done := make(chan error, 1)
	go func() { done <- lead(tctx) }()
	why, err := e.hold(tctx, epoch, done)
	cancel()

	e.mu.Lock()
	e.epoch = 0
	e.mu.Unlock()
	e.onEpoch(0)
	if why != "lead returned" {
		if lerr := <-done; lerr != nil && err == nil && ctx.Err() == nil {
			err = lerr
		}
	}
	e.m.LeaderRole(false)
	if ctx.Err() != nil {
		// A clean shutdown: hand over at once.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), e.interval())
		defer rcancel()
		if rerr := e.leases.Resign(rctx, e.cfg.Holder, epoch); rerr != nil {
			e.log.Warn().Err(rerr).Msg("resign the lease; a follower takes over when it expires")
		}
		e.log.Info().Int64("epoch", epoch).Msg("gave up the lead: shutting down")
		return nil
	}
	e.log.Warn().Int64("epoch", epoch).Str("why", why).Msg("lost the lead")
	return err
}

// hold renews the lease until it is lost, lapses, ctx ends or lead
// returns, and says which.
func (e *Elector) hold(ctx context.Context, epoch int64, done <-chan error) (string, error) {
	tick := e.clock.NewTicker(e.interval())
	defer tick.Stop()
	for {
		left := e.left()
		if left <= 0 {
			return "the lease lapsed before a renewal went through", nil
		}
		select {
		case <-ctx.Done():
			return "shutting down", nil
		case err := <-done:
			if err != nil {
				return "lead returned", fmt.Errorf("leader work: %w", err)
			}
			return "lead returned", nil
		case <-e.clock.After(left):
			return "the lease lapsed before a renewal went through", nil
		case <-tick.C():
		}
		// The process may have been paused in the select (SIGSTOP), with
		// the tick as ready as the lapse: measure again.
		asked := e.clock.Now()
		if left = e.left(); left <= 0 {
			return "the lease lapsed before a renewal went through", nil
		}
		rctx, cancel := context.WithTimeout(ctx, min(e.interval(), left))
		err := e.leases.Renew(rctx, e.cfg.Holder, epoch, e.cfg.TTL)
		cancel()
		switch {
		case err == nil:
			e.m.LeaseRenewal("ok")
			e.mu.Lock()
			e.validUntil = asked.Add(e.cfg.TTL - e.margin())
			e.mu.Unlock()
		case errors.Is(err, fleet.ErrNotLeader):
			e.m.LeaseRenewal("lost")
			return "another replica took the lease", nil
		case ctx.Err() != nil:
			return "shutting down", nil
		default:
			e.m.LeaseRenewal("error")
			e.log.Warn().Err(err).Dur("left", left).Msg("renew the lease failed; outside calls stop when it would lapse")
		}
	}
}

// left is how long this replica may still call out, by its own clock.
func (e *Elector) left() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.validUntil.Sub(e.clock.Now())
}

// guard returns a context for one outside call that ends with the term,
// that is before the lease could lapse, or fleet.ErrNotLeader when this
// replica does not lead. It is not a deadline of its own: each renewal
// moves the lapse, and a call may take longer than one lease time (an
// instance's create and start did, under load, and were cut short).
//
// The context also carries a permit (fleet.WithPermit) that the LXD and
// GitHub clients check, by this replica's clock, before each request: a
// call that a stopped process resumes cannot send one more before the
// cancellation reaches it, and a cleanup on context.WithoutCancel(ctx)
// (which drops the cancellation, not the permit) sends none either.
func (e *Elector) guard(ctx context.Context) (context.Context, context.CancelFunc, error) {
	e.mu.Lock()
	leading, left, term := e.epoch != 0, e.validUntil.Sub(e.clock.Now()), e.termCtx
	e.mu.Unlock()
	if !leading || left <= 0 || term.Err() != nil {
		return ctx, func() {}, fleet.ErrNotLeader
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(term, cancel)
	ctx = fleet.WithPermit(ctx, func() error {
		if term.Err() != nil || e.left() <= 0 {
			return fleet.ErrNotLeader
		}
		return nil
	})
	return ctx, func() { stop(); cancel() }, nil
}

type nopMetrics struct{}

func (nopMetrics) LeaderRole(bool)     {}
func (nopMetrics) LeaderChange()       {}
func (nopMetrics) LeaseRenewal(string) {}
