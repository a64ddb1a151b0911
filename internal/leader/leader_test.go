package leader_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/leader"
)

// leases is an in-memory lease row on the fake clock, with knobs.
type leases struct {
	mu       sync.Mutex
	clock    *fleettest.Clock
	holder   string
	epoch    int64
	expires  time.Time
	renewErr error         // every renewal fails with it, when set
	hang     chan struct{} // renewals wait for it, when set
	resigned int
}

func (l *leases) TryLead(_ context.Context, holder string, ttl time.Duration) (int64, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	if now.Before(l.expires) {
		return 0, false, nil
	}
	l.holder, l.epoch, l.expires = holder, l.epoch+1, now.Add(ttl)
	return l.epoch, true, nil
}

func (l *leases) Renew(ctx context.Context, holder string, epoch int64, ttl time.Duration) error {
	l.mu.Lock()
	hang, rerr := l.hang, l.renewErr
	l.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if rerr != nil {
		return rerr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	if l.holder != holder || l.epoch != epoch || !now.Before(l.expires) {
		return fleet.ErrNotLeader
	}
	l.expires = now.Add(ttl)
	return nil
}

func (l *leases) Resign(_ context.Context, holder string, epoch int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holder == holder && l.epoch == epoch {
		l.expires = time.Time{}
		l.resigned++
	}
	return nil
}

func (l *leases) set(fn func(l *leases)) { l.mu.Lock(); fn(l); l.mu.Unlock() }

type env struct {
	t       *testing.T
	clock   *fleettest.Clock
	leases  *leases
	e       *leader.Elector
	inst    fleet.Instances
	epochs  chan int64
	leadCtx chan context.Context
	cancel  context.CancelFunc
	done    chan error
}

const ttl = 3 * time.Second

func start(t *testing.T) *env {
	t.Helper()
	clock := fleettest.NewClock(time.Time{})
	v := &env{t: t, clock: clock, leases: &leases{clock: clock}, epochs: make(chan int64, 16),
		leadCtx: make(chan context.Context, 4), done: make(chan error, 1)}
	v.e = leader.New(leader.Config{Holder: "r1", TTL: ttl}, v.leases, clock, nil,
		func(e int64) { v.epochs <- e }, zerolog.Nop())
	v.inst = v.e.Instances(fleettest.NewInstances())
	ctx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	go func() {
		v.done <- v.e.Run(ctx, func(ctx context.Context) error {
			v.leadCtx <- ctx
			<-ctx.Done()
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-v.done })
	return v
}

func (v *env) lead() context.Context {
	v.t.Helper()
	select {
	case ctx := <-v.leadCtx:
		return ctx
	case <-time.After(10 * time.Second):
		v.t.Fatal("never took the lead")
		return nil
	}
}

func (v *env) call() error {
	_, err := v.inst.List(context.Background())
	return err
}

// advance moves the clock in steps, letting the elector's goroutine run
// between them.
func (v *env) advance(d, step time.Duration) {
	for moved := time.Duration(0); moved < d; moved += step {
		v.clock.Advance(step)
		time.Sleep(time.Millisecond) // let the elector see the tick; the clock is ours
	}
}

func TestLeaderRenewsAndCalls(t *testing.T) {
	v := start(t)
	ctx := v.lead()
	if e := <-v.epochs; e != 1 {
		t.Fatalf("epoch %d, want 1", e)
	}
	v.advance(5*ttl, ttl/6)
	if ctx.Err() != nil {
		t.Fatal("the term ended though every renewal went through")
	}
	if err := v.call(); err != nil {
		t.Fatalf("a call while leading: %v", err)
	}
	if leading, _ := v.e.Status(); !leading {
		t.Fatal("Status says not leading")
	}
}

// A leader whose renewals fail stops its outside calls by its own clock
// before the lease could have lapsed in the database.
func TestLeaderStopsCallingBeforeTheLeaseLapses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		breakIt func(l *leases)
	}{
		{"renewals fail", func(l *leases) { l.renewErr = errors.New("connection refused") }},
		{"renewals hang", func(l *leases) { l.hang = make(chan struct{}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := start(t)
			ctx := v.lead()
			v.leases.set(tc.breakIt)
			var stopped time.Duration
			for moved := time.Duration(0); moved < 2*ttl; moved += ttl / 30 {
				if v.call() != nil {
					stopped = moved
					break
				}
				v.clock.Advance(ttl / 30)
				time.Sleep(time.Millisecond)
			}
			if stopped == 0 || stopped >= ttl {
				t.Fatalf("calls stopped after %v, want before the lease time %v", stopped, ttl)
			}
			if err := v.call(); !errors.Is(err, fleet.ErrNotLeader) {
				t.Fatalf("call = %v, want ErrNotLeader", err)
			}
			waitDone(t, ctx)
			if e := lastEpoch(v.epochs); e != 0 {
				t.Fatalf("the fence still holds epoch %d", e)
			}
		})
	}
}

// Another replica took the lease (after this one was paused, say): the
// first renewal says so, the term ends, and calls are refused at once.
func TestDeposedLeaderStepsDown(t *testing.T) {
	v := start(t)
	ctx := v.lead()
	v.leases.set(func(l *leases) { l.holder, l.epoch = "r2", l.epoch+1 })
	v.advance(ttl/2, ttl/6)
	waitDone(t, ctx)
	if err := v.call(); !errors.Is(err, fleet.ErrNotLeader) {
		t.Fatalf("call after deposition = %v, want ErrNotLeader", err)
	}
	if leading, _ := v.e.Status(); leading {
		t.Fatal("Status says leading")
	}
}

// A follower takes the lead once the lease expires, not before.
func TestFollowerTakesOverWhenTheLeaseExpires(t *testing.T) {
	clock := fleettest.NewClock(time.Time{})
	l := &leases{clock: clock, holder: "r0", epoch: 7, expires: clock.Now().Add(ttl)}
	e := leader.New(leader.Config{Holder: "r1", TTL: ttl}, l, clock, nil, nil, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	led := make(chan time.Time, 1)
	done := make(chan error, 1)
	go func() {
		done <- e.Run(ctx, func(ctx context.Context) error { led <- clock.Now(); <-ctx.Done(); return nil })
	}()
	defer func() { cancel(); <-done }()
	t0 := clock.Now()
	for moved := time.Duration(0); moved < 3*ttl; moved += ttl / 30 {
		select {
		case at := <-led:
			if took := at.Sub(t0); took < ttl || took > ttl+ttl/3+ttl/30 {
				t.Fatalf("took over after %v, want between the lease time %v and one campaign interval more", took, ttl)
			}
			return
		default:
		}
		clock.Advance(ttl / 30)
		time.Sleep(time.Millisecond)
	}
	t.Fatal("never took over")
}

// A leader shutting down resigns, so a follower need not wait.
func TestShutdownResigns(t *testing.T) {
	v := start(t)
	v.lead()
	v.cancel()
	if err := <-v.done; err != nil {
		t.Fatal(err)
	}
	v.done <- nil // for the cleanup
	v.leases.set(func(l *leases) {
		if l.resigned != 1 {
			t.Errorf("resigned %d times, want 1", l.resigned)
		}
	})
}

func waitDone(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the leader's work was not stopped")
	}
}

// lastEpoch drains the epochs told so far and returns the last.
func lastEpoch(ch chan int64) int64 {
	var last int64 = -1
	for {
		select {
		case e := <-ch:
			last = e
		case <-time.After(100 * time.Millisecond):
			return last
		}
	}
}

// A call in flight lives as long as the term, not one lease time: a leader
// that keeps renewing may take longer over a call than its lease lasts
// (an instance's create and start do, under load). When the renewals stop
// going through, the call is cancelled before the lease could lapse. On
// the wall clock, with a short lease: the cut is a timer's.
func TestCallInFlightEndsWithTheTerm(t *testing.T) {
	const ttl = 300 * time.Millisecond
	l := &leases{clock: fleettest.NewClock(time.Time{})} // its lease never expires by itself
	e := leader.New(leader.Config{Holder: "r1", TTL: ttl}, l, fleet.WallClock, nil, nil, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	led := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- e.Run(ctx, func(ctx context.Context) error { led <- struct{}{}; <-ctx.Done(); return nil })
	}()
	defer func() { cancel(); <-done }()
	select {
	case <-led:
	case <-time.After(10 * time.Second):
		t.Fatal("never took the lead")
	}

	call, end, err := e.Guard(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer end()
	time.Sleep(4 * ttl)
	if call.Err() != nil {
		t.Fatal("a call in flight was cut short though every renewal went through")
	}

	l.set(func(l *leases) { l.renewErr = errors.New("connection refused") })
	stopped := time.Now()
	select {
	case <-call.Done():
		if took := time.Since(stopped); took >= ttl {
			t.Fatalf("the call was cancelled %v after the renewals stopped, want before the lease time %v", took, ttl)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call was not cancelled when the lease lapsed")
	}
	if _, _, err := e.Guard(context.Background()); !errors.Is(err, fleet.ErrNotLeader) {
		t.Fatalf("a call after the lapse: %v, want ErrNotLeader", err)
	}
}

// Once the lease may have lapsed, a call's permit refuses at once, by the
// replica's own clock, before the cancellation reaches the call, and also
// under a context that dropped the cancellation (a cleanup's).
func TestPermitRefusesOnceTheLeaseMayHaveLapsed(t *testing.T) {
	v := start(t)
	v.lead()
	call, end, err := v.e.Guard(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer end()
	cleanup := context.WithoutCancel(call)
	if err := fleet.Permitted(cleanup); err != nil {
		t.Fatalf("permit while leading: %v", err)
	}
	v.leases.set(func(l *leases) { l.renewErr = errors.New("connection refused") })
	v.clock.Advance(ttl) // in one step, as a process that was stopped sees it
	if err := fleet.Permitted(cleanup); !errors.Is(err, fleet.ErrNotLeader) {
		t.Fatalf("permit after the lease time: %v, want ErrNotLeader", err)
	}
}

// countingCluster counts the calls that reach it.
type countingCluster struct{ calls atomic.Int32 }

func (c *countingCluster) Topology(context.Context) (fleet.Topology, error) {
	c.calls.Add(1)
	return fleet.Topology{}, nil
}

func (c *countingCluster) Architecture(context.Context, string, string, string) (string, error) {
	c.calls.Add(1)
	return "x86_64", nil
}

// Reading LXD's members is an outside call like any other: refused once
// the lease may have lapsed.
func TestClusterReadsAreGuarded(t *testing.T) {
	v := start(t)
	ctx := v.lead()
	inner := &countingCluster{}
	cl := v.e.Cluster(inner)
	if _, err := cl.Topology(context.Background()); err != nil || inner.calls.Load() != 1 {
		t.Fatalf("while leading: %v, %d calls", err, inner.calls.Load())
	}
	v.leases.set(func(l *leases) { l.renewErr = errors.New("connection refused") })
	for moved := time.Duration(0); moved < 2*ttl && ctx.Err() == nil; moved += ttl / 30 {
		v.clock.Advance(ttl / 30)
		time.Sleep(time.Millisecond)
	}
	waitDone(t, ctx)
	if _, err := cl.Topology(context.Background()); !errors.Is(err, fleet.ErrNotLeader) {
		t.Fatalf("Topology after the lease lapsed = %v, want ErrNotLeader", err)
	}
	if _, err := cl.Architecture(context.Background(), "", "img", ""); !errors.Is(err, fleet.ErrNotLeader) {
		t.Fatalf("Architecture after the lease lapsed = %v, want ErrNotLeader", err)
	}
	if n := inner.calls.Load(); n != 1 {
		t.Fatalf("%d calls reached LXD, want only the one made while leading", n)
	}
}

// A task that runs for the whole term (an image rebuild) is refused its
// requests once the lease may have lapsed, even while it is still
// running, and its context ends with the term; outside a term it does
// not run at all.
func TestTasksAreGuarded(t *testing.T) {
	v := start(t)
	term := v.lead()
	got := make(chan context.Context, 1)
	ended := make(chan error, 1)
	go func() {
		ended <- v.e.Task(func(ctx context.Context) error {
			got <- ctx
			<-ctx.Done()
			return nil
		})(term)
	}()
	ctx := <-got
	if err := fleet.Permitted(ctx); err != nil {
		t.Fatalf("permit while leading: %v", err)
	}
	v.leases.set(func(l *leases) { l.renewErr = errors.New("connection refused") })
	v.clock.Advance(ttl) // in one step, as a process that was stopped sees it
	if err := fleet.Permitted(ctx); !errors.Is(err, fleet.ErrNotLeader) {
		t.Fatalf("permit after the lease time: %v, want ErrNotLeader", err)
	}
	v.advance(ttl, ttl/6)
	waitDone(t, ctx)
	<-ended

	ran := false
	if err := v.e.Task(func(context.Context) error { ran = true; return nil })(context.Background()); err != nil || ran {
		t.Fatalf("a task outside a term: ran %v, err %v", ran, err)
	}
}
