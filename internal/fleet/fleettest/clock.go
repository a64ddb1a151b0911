// Package fleettest holds fakes of the fleet ports that every package's
// tests share: a clock the test drives, an in-memory LXD and GitHub, a
// metrics recorder and a log buffer. They are as simple as the ports allow
// and keep what a test asks about (launches, peaks, calls); the real
// adapters are tested against the real LXD daemon and the GitHub stand-in.
package fleettest

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// T0 is the time fake clocks start at, unless told otherwise.
var T0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// Clock is a fleet.Clock that moves only when the test says: Advance fires
// the timers and tickers that come due, in order.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []*waiter
	changed chan struct{} // closed and replaced whenever a timer is added
}

type waiter struct {
	at    time.Time
	every time.Duration // 0 for a one-shot timer
	ch    chan time.Time
	done  bool
}

var _ fleet.Clock = (*Clock)(nil)

// NewClock returns a clock at t (T0 when zero).
func NewClock(t time.Time) *Clock {
	if t.IsZero() {
		t = T0
	}
	return &Clock{now: t, changed: make(chan struct{})}
}

func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *Clock) After(d time.Duration) <-chan time.Time {
	return c.add(d, 0).ch
}

func (c *Clock) NewTicker(d time.Duration) fleet.Ticker {
	if d <= 0 {
		panic("fleettest: non-positive ticker interval") // as time.NewTicker
	}
	return &ticker{c: c, w: c.add(d, d)}
}

func (c *Clock) add(d, every time.Duration) *waiter {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &waiter{at: c.now.Add(d), every: every, ch: make(chan time.Time, 1)}
	if d <= 0 && every == 0 {
		w.ch <- c.now
		w.done = true
		return w
	}
	c.waiters = append(c.waiters, w)
	close(c.changed)
	c.changed = make(chan struct{})
	return w
}

// Advance moves the clock by d, firing what comes due on the way. Like
// time.Ticker, a ticker whose reader is behind drops ticks.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	end := c.now.Add(d)
	for {
		sort.SliceStable(c.waiters, func(i, j int) bool { return c.waiters[i].at.Before(c.waiters[j].at) })
		if len(c.waiters) == 0 || c.waiters[0].at.After(end) {
			break
		}
		w := c.waiters[0]
		c.now = w.at
		select {
		case w.ch <- w.at:
		default:
		}
		if w.every > 0 {
			w.at = w.at.Add(w.every)
			continue
		}
		w.done = true
		c.waiters = c.waiters[1:]
	}
	c.now = end
}

// Timers returns how many one-shot timers wait to fire.
func (c *Clock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, w := range c.waiters {
		if w.every == 0 {
			n++
		}
	}
	return n
}

// NextTimer returns how long until the next one-shot timer fires; false
// when none waits.
func (c *Clock) NextTimer() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next time.Time
	for _, w := range c.waiters {
		if w.every == 0 && (next.IsZero() || w.at.Before(next)) {
			next = w.at
		}
	}
	return next.Sub(c.now), !next.IsZero()
}

// WaitTimers blocks until at least n one-shot timers wait to fire (some
// goroutine is sleeping on the clock), or ctx ends.
func (c *Clock) WaitTimers(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		changed := c.changed
		c.mu.Unlock()
		if c.Timers() >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-time.After(10 * time.Millisecond): // a timer that fired may be re-added without a change of count
		}
	}
}

type ticker struct {
	c *Clock
	w *waiter
}

func (t *ticker) C() <-chan time.Time { return t.w.ch }

func (t *ticker) Stop() {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for i, w := range t.c.waiters {
		if w == t.w {
			t.c.waiters = append(t.c.waiters[:i], t.c.waiters[i+1:]...)
			return
		}
	}
}
