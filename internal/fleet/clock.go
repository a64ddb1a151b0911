package fleet

import (
	"context"
	"math/rand/v2"
	"time"
)

// Clock is the one source of time: now, timers and tickers. The service
// runs on WallClock; tests drive fleettest.Clock, so that timers
// (registration timeout, max job duration, idle age, backoffs) are tested
// without sleeping.
type Clock interface {
	Now() time.Time
	// After sends the time on the returned channel once d has passed.
	After(d time.Duration) <-chan time.Time
	// NewTicker ticks every d until stopped.
	NewTicker(d time.Duration) Ticker
}

// Ticker is a time.Ticker behind an interface, so fakes can drive it.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// WallClock is the real clock. Its times keep their monotonic reading, so
// that the time between two of them survives a step of the wall clock:
// the leader's lease is measured that way.
var WallClock Clock = wallClock{}

type wallClock struct{}

func (wallClock) Now() time.Time                         { return time.Now() }
func (wallClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (wallClock) NewTicker(d time.Duration) Ticker       { return wallTicker{time.NewTicker(d)} }

type wallTicker struct{ t *time.Ticker }

func (t wallTicker) C() <-chan time.Time { return t.t.C }
func (t wallTicker) Stop()               { t.t.Stop() }

// Sleep waits d on c, or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, c Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c.After(d):
		return nil
	}
}

// Backoff is the wait before retry n (0-based): base doubled n times,
// capped at max, with jitter over its upper half so that many retrying
// callers spread out.
func Backoff(n int, base, max time.Duration) time.Duration {
	d := base << min(max0(n), 30)
	if d > max || d <= 0 {
		d = max
	}
	return d/2 + rand.N(d/2+1)
}

func max0(n int) int {
	if n < 0 {
		return 0
	}
	return n
}
