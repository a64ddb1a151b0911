package scheduler

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// workers runs one goroutine per runner being launched or torn down, never
// two for one runner, and remembers when what failed may try again.
type workers struct {
	wg sync.WaitGroup
	// work is the parent context of workers: it outlives Run's ctx by
	// ShutdownGrace, so a launch in flight at shutdown can finish.
	work     context.Context
	stopWork context.CancelFunc

	mu       sync.Mutex
	inflight map[string]bool      // runner names with a worker running
	retry    map[string]time.Time // runner name -> earliest next teardown attempt
	launches backoff              // per pool: no launch before
	prepares backoff              // per pool: no prepared instance made before
}

// backoff holds, per pool, the consecutive failures of one kind of work
// and the time before which the pool tries it again.
type backoff struct {
	failures map[string]int
	holds    map[string]time.Time
}

func newBackoff() backoff {
	return backoff{failures: map[string]int{}, holds: map[string]time.Time{}}
}

// failed counts a failure of pool's and returns the wait before the next
// try: capped exponential with jitter.
func (b backoff) failed(pool string, now time.Time, maxBackoff time.Duration) time.Duration {
	b.failures[pool]++
	d := fleet.Backoff(b.failures[pool]-1, time.Second, maxBackoff)
	b.holds[pool] = now.Add(d)
	return d
}

func (b backoff) succeeded(pool string) {
	delete(b.failures, pool)
	delete(b.holds, pool)
}

func newWorkers() *workers {
	work, stop := context.WithCancel(context.Background())
	return &workers{
		work: work, stopWork: stop,
		inflight: map[string]bool{}, retry: map[string]time.Time{},
		launches: newBackoff(), prepares: newBackoff(),
	}
}

// start runs fn for r in its own goroutine unless one is already running
// for r, and then calls then.
func (w *workers) start(r fleet.Runner, fn func(fleet.Runner), then func()) {
	w.mu.Lock()
	if w.inflight[r.Name] {
		w.mu.Unlock()
		return
	}
	w.inflight[r.Name] = true
	w.mu.Unlock()
	w.wg.Go(func() {
		fn(r)
		w.mu.Lock()
		delete(w.inflight, r.Name)
		w.mu.Unlock()
		then()
	})
}

// running adds the names of runners with a worker in flight to into (a new
// map when nil) and returns it.
func (w *workers) running(into map[string]bool) map[string]bool {
	if into == nil {
		into = map[string]bool{}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for k := range w.inflight {
		into[k] = true
	}
	return into
}

// stop waits for the workers in flight, for at most grace; then their
// context is cancelled and they clean up after themselves.
func (w *workers) stop(clock fleet.Clock, grace time.Duration) {
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-clock.After(grace):
		w.stopWork()
		<-done
	}
	w.stopWork()
}

// retryAt is when a failed teardown of the named runner may try again.
func (w *workers) retryAt(name string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.retry[name]
}

func (w *workers) setRetry(name string, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if at.IsZero() {
		delete(w.retry, name)
		return
	}
	w.retry[name] = at
}

// launchFailed backs the pool off after a failed launch, so that a broken
// image or an LXD in trouble is not hammered. It returns the wait.
func (w *workers) launchFailed(pool string, now time.Time, maxBackoff time.Duration) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.launches.failed(pool, now, maxBackoff)
}

func (w *workers) launchSucceeded(pool string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.launches.succeeded(pool)
}

// notBefore returns, per pool, the time before which it launches nothing.
func (w *workers) notBefore() map[string]time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.launches.holds)
}

// prepareFailed backs the pool's prepared instances off, as launchFailed
// its launches: apart, so that a pool whose prepares fail (a full disk)
// still launches. It returns the wait.
func (w *workers) prepareFailed(pool string, now time.Time, maxBackoff time.Duration) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.prepares.failed(pool, now, maxBackoff)
}

func (w *workers) prepareSucceeded(pool string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.prepares.succeeded(pool)
}

// prepareNotBefore returns, per pool, the time before which it makes no
// prepared instance.
func (w *workers) prepareNotBefore() map[string]time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.prepares.holds)
}
