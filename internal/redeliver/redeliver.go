// Package redeliver recovers workflow_job webhooks that never reached the
// service. GitHub does not retry a failed delivery, so a job whose "queued"
// webhook was lost (service down, 5xx) would wait forever. A Redeliverer
// periodically lists the App's recent deliveries and asks GitHub to
// redeliver the failed ones the store has not recorded. A redelivery keeps
// its X-GitHub-Delivery GUID, so the store's dedupe still holds.
//
// It redelivers a failed ping too: GitHub pings the App's webhook URL when
// the App is made, before the service that the App is made for can run,
// and that ping, once it arrives, is the first webhook the service
// records (the operator sees the proxy and the secret work before any
// job). A ping is recorded nowhere else, so only its own attempts tell
// whether it arrived.
package redeliver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// Defaults.
const (
	DefaultInterval    = time.Minute
	DefaultLookback    = 6 * time.Hour
	DefaultMaxPerRound = 50

	// MinInterval keeps a misconfiguration from paging through hours of
	// deliveries many times a second; tests use the minimum.
	MinInterval = time.Second
	MaxInterval = 24 * time.Hour
	// MaxAttempts is how many times one GUID is redelivered before we give
	// up on it: a delivery that fails again and again will not be fixed by
	// more of the same.
	MaxAttempts = 3
)

const (
	eventWorkflowJob = "workflow_job"
	eventPing        = "ping"
	// maxBackoffSteps caps the doubling of Run's wait after failed rounds.
	maxBackoffSteps = 5
	maxBackoff      = 30 * time.Minute
	// maxRateWait bounds a rate-limit wait against a nonsensical reset time;
	// GitHub's windows are at most an hour.
	maxRateWait = time.Hour
)

// Config configures a Redeliverer. The zero value is valid.
type Config struct {
	Interval time.Duration // between rounds; default 1m
	Lookback time.Duration // how far back to list deliveries; default 6h
	// MaxPerRound caps redelivery requests per round (default 50), so a long
	// outage does not earn a rate-limit ban; the rest wait for later rounds.
	MaxPerRound int
}

// WithDefaults fills unset fields.
func (c Config) WithDefaults() Config {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Lookback == 0 {
		c.Lookback = DefaultLookback
	}
	if c.MaxPerRound == 0 {
		c.MaxPerRound = DefaultMaxPerRound
	}
	return c
}

// Validate reports every problem of a configuration with defaults applied,
// in the config file's words (redeliver_interval).
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.Interval < MinInterval || c.Interval > MaxInterval:
		errs = append(errs, fmt.Errorf("redeliver_interval %s: must be between %s and %s", c.Interval, MinInterval, MaxInterval))
	case c.Lookback < c.Interval:
		// A lookback shorter than the interval could let a delivery that
		// failed just after one round fall out of the window before the next.
		errs = append(errs, fmt.Errorf("redeliver_interval %s: must not be longer than the redelivery lookback (%s)", c.Interval, c.Lookback))
	}
	if c.MaxPerRound < 1 {
		errs = append(errs, fmt.Errorf("redeliver: at most %d redeliveries a round: want at least 1", c.MaxPerRound))
	}
	return errors.Join(errs...)
}

// Deliveries is the part of GitHub the Redeliverer uses.
type Deliveries interface {
	// AppDeliveries lists attempts delivered at or after since, newest first.
	AppDeliveries(ctx context.Context, since time.Time) ([]fleet.AppDelivery, error)
	Redeliver(ctx context.Context, id int64) error
}

// Seen tells which delivery GUIDs the service has recorded.
type Seen interface {
	SeenDeliveries(ctx context.Context, guids []string) (map[string]bool, error)
}

// rateLimited is matched by an error that says when GitHub's rate limit
// lifts (ghapp's RateLimitError).
type rateLimited interface {
	error
	RetryAfter() time.Time
}

// Result counts what one round found and did.
type Result struct {
	Listed      int // delivery attempts listed, all events
	Failed      int // workflow_job and ping GUIDs none of whose attempts succeeded
	SkippedSeen int // of those, recorded by the service anyway (e.g. answered late)
	Waiting     int // of those, redelivered recently: waiting before asking again
	Redelivered int // redeliveries GitHub accepted this round
	Deferred    int // left for a later round by MaxPerRound
	GaveUp      int // GUIDs given up on this round (logged once each)
}

// tracked is what we remember of a GUID we asked GitHub to redeliver.
type tracked struct {
	attempts int
	last     time.Time
	gaveUp   bool
}

// Redeliverer asks GitHub to redeliver missed workflow_job webhooks.
type Redeliverer struct {
	cfg   Config
	gh    Deliveries
	seen  Seen
	clock fleet.Clock
	log   zerolog.Logger

	mu    sync.Mutex // one round at a time; guards asked
	asked map[string]*tracked
}

// New builds a Redeliverer. clock may be nil (the wall clock). It does no
// I/O.
func New(cfg Config, d Deliveries, seen Seen, clock fleet.Clock, log zerolog.Logger) (*Redeliverer, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d == nil || seen == nil {
		return nil, errors.New("redeliver: deliveries and seen are required")
	}
	if clock == nil {
		clock = fleet.WallClock
	}
	return &Redeliverer{
		cfg: cfg, gh: d, seen: seen, clock: clock,
		log:   log.With().Str("component", "redeliver").Logger(),
		asked: map[string]*tracked{},
	}, nil
}

// Run does a round now and then every Interval until ctx ends. A failed
// round is logged and the next one waits longer: doubling, or until
// GitHub's rate limit resets.
func (r *Redeliverer) Run(ctx context.Context) error {
	failures := 0
	for {
		res, err := r.Round(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := r.cfg.Interval
		if err != nil {
			failures++
			wait = r.backoff(err, failures)
			r.log.Warn().Err(err).Dur("retry_in", wait).Msg("redelivery round failed")
		} else {
			failures = 0
		}
		if res.Redelivered > 0 || res.GaveUp > 0 || res.Deferred > 0 {
			r.log.Info().Int("listed", res.Listed).Int("failed", res.Failed).Int("redelivered", res.Redelivered).
				Int("skipped_seen", res.SkippedSeen).Int("waiting", res.Waiting).Int("deferred", res.Deferred).
				Int("gave_up", res.GaveUp).Msg("redelivery round")
		}
		if err := fleet.Sleep(ctx, r.clock, wait); err != nil {
			return nil
		}
	}
}

// backoff is the wait after the n-th failed round in a row.
func (r *Redeliverer) backoff(err error, n int) time.Duration {
	d := min(r.cfg.Interval<<min(n, maxBackoffSteps), max(maxBackoff, r.cfg.Interval))
	var rl rateLimited
	if errors.As(err, &rl) {
		// GitHub's headers say when, by the wall clock: not ours to fake.
		d = max(d, min(time.Until(rl.RetryAfter()), max(maxRateWait, r.cfg.Interval)))
	}
	return d
}

// guidState gathers the listed attempts of one GUID.
type guidState struct {
	guid        string
	first       fleet.AppDelivery // oldest attempt: orders the work
	newest      fleet.AppDelivery // the one to redeliver
	redelivered int               // listed attempts that were redeliveries
	succeeded   bool
}

// Round lists recent deliveries and redelivers the workflow_job and ping ones that
// never succeeded and that the service has not recorded, oldest first.
func (r *Redeliverer) Round(ctx context.Context) (Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var res Result
	now := r.clock.Now()
	list, err := r.gh.AppDeliveries(ctx, now.Add(-r.cfg.Lookback))
	if err != nil {
		return res, fmt.Errorf("redeliver: %w", err)
	}
	res.Listed = len(list)

	byGUID := map[string]*guidState{}
	for _, d := range list {
		if (d.Event != eventWorkflowJob && d.Event != eventPing) || d.GUID == "" {
			continue
		}
		g := byGUID[d.GUID]
		if g == nil {
			g = &guidState{guid: d.GUID, first: d, newest: d}
			byGUID[d.GUID] = g
		}
		if later(d, g.newest) {
			g.newest = d
		}
		if later(g.first, d) {
			g.first = d
		}
		if d.Redelivery {
			g.redelivered++
		}
		if !d.Failed() {
			g.succeeded = true
		}
	}
	var failed []*guidState
	for _, g := range byGUID {
		if !g.succeeded {
			failed = append(failed, g)
		}
	}
	// Forget GUIDs that recovered or left the window.
	for guid := range r.asked {
		if g := byGUID[guid]; g == nil || g.succeeded {
			delete(r.asked, guid)
		}
	}
	res.Failed = len(failed)
	if len(failed) == 0 {
		return res, nil
	}

	guids := make([]string, len(failed))
	for i, g := range failed {
		guids[i] = g.guid
	}
	seen, err := r.seen.SeenDeliveries(ctx, guids)
	if err != nil {
		return res, fmt.Errorf("redeliver: %w", err)
	}
	slices.SortFunc(failed, func(a, b *guidState) int {
		switch {
		case later(b.first, a.first):
			return -1
		case later(a.first, b.first):
			return 1
		}
		return 0
	})

	var errs []error
	var limited error // GitHub rate-limited us: ask no more this round
	requests := 0
	for _, g := range failed {
		if seen[g.guid] {
			// Recorded, but answered too late or with an error: nothing
			// is missing.
			res.SkippedSeen++
			delete(r.asked, g.guid)
			continue
		}
		t := r.asked[g.guid]
		if t == nil {
			t = &tracked{}
		}
		if t.gaveUp {
			continue
		}
		// The listing remembers redeliveries across restarts; our map
		// remembers those GitHub has not attempted yet.
		attempts, last := max(t.attempts, g.redelivered), t.last
		if last.IsZero() && g.newest.Redelivery {
			last = g.newest.DeliveredAt
		}
		if attempts > 0 && now.Sub(last) < r.spacing(attempts) {
			res.Waiting++
			continue
		}
		log := r.log.With().Str("delivery_guid", g.guid).Str("event", g.newest.Event).Str("action", g.newest.Action).
			Int64("delivery_id", g.newest.ID).Logger()
		if attempts >= MaxAttempts {
			t.gaveUp = true
			r.asked[g.guid] = t
			res.GaveUp++
			msg := "webhook still not delivered after redeliveries; giving up: its job may need a re-run"
			if g.newest.Event == eventPing {
				msg = "GitHub's ping still not delivered after redeliveries; giving up: check the App's webhook URL, the proxy and the secret (lxd-gha-autoscaler doctor --webhook-url URL)"
			}
			log.Error().Int("attempts", attempts).Time("first_delivered_at", g.first.DeliveredAt).Str("status", g.newest.Status).Msg(msg)
			continue
		}
		if requests >= r.cfg.MaxPerRound || limited != nil {
			res.Deferred++
			continue
		}
		requests++
		err := r.gh.Redeliver(ctx, g.newest.ID)
		var rl rateLimited
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return res, fmt.Errorf("redeliver: %w", ctx.Err())
		case errors.As(err, &rl):
			// Refused outright, so not an attempt; the rest would be
			// refused too.
			limited = err
			res.Deferred++
			continue
		}
		// A failed request counts too: GitHub may have acted on it, and
		// a GUID must not be retried without bound.
		t.attempts, t.last = attempts+1, now
		r.asked[g.guid] = t
		if err != nil {
			log.Warn().Err(err).Msg("redelivery request failed")
			errs = append(errs, err)
			continue
		}
		res.Redelivered++
		log.Info().Int("attempt", t.attempts).Time("first_delivered_at", g.first.DeliveredAt).
			Msg("asked github to redeliver a missed webhook")
	}
	if limited != nil {
		errs = append([]error{limited}, errs...)
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("redeliver: %d of %d requests failed: %w", len(errs), requests, errors.Join(errs...))
	}
	return res, nil
}

// spacing is how long to wait after the n-th redelivery before asking again
// (or giving up): long enough for GitHub to attempt it, growing each time.
func (r *Redeliverer) spacing(n int) time.Duration {
	return r.cfg.Interval << min(n, 10)
}

// later reports whether a was delivered after b; ids break ties, since
// GitHub's timestamps have one-second resolution.
func later(a, b fleet.AppDelivery) bool {
	if !a.DeliveredAt.Equal(b.DeliveredAt) {
		return a.DeliveredAt.After(b.DeliveredAt)
	}
	return a.ID > b.ID
}
