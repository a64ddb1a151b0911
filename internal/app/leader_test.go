package app_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/app"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/leader"
)

// soleLeases is a lease row no other replica wants: taken at once, and
// renewed until broken.
type soleLeases struct {
	mu     sync.Mutex
	broken bool
}

func (l *soleLeases) TryLead(context.Context, string, time.Duration) (int64, bool, error) {
	return 1, true, nil
}

func (l *soleLeases) Renew(context.Context, string, int64, time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken {
		return errors.New("connection refused")
	}
	return nil
}

func (l *soleLeases) Resign(context.Context, string, int64) error { return nil }

// A leader task (the image rebuilds) makes its requests under the lease's
// permit, as the scheduler's calls do: once the lease may have lapsed, a
// rebuild that is still running sends nothing more.
func TestLeaderTasksRunUnderTheLease(t *testing.T) {
	leases := &soleLeases{}
	tasks := make(chan context.Context, 1)
	e := newEnv(t, func(_ *app.Config, d *app.Deps) {
		el := leader.New(leader.Config{Holder: "r1", TTL: 3 * time.Second}, leases, d.Clock, nil, nil, zerolog.Nop())
		d.Replicas = &app.Replicas{
			Elector: el, Fenced: d.State,
			Listen: func(ctx context.Context, _ func()) error { <-ctx.Done(); return nil },
			Leader: func(context.Context) (string, time.Time, error) { return "r1", time.Time{}, nil },
		}
		d.LeaderTasks = []func(context.Context) error{func(ctx context.Context) error {
			tasks <- ctx
			<-ctx.Done()
			return nil
		}}
	})
	e.run()
	var task context.Context
	select {
	case task = <-tasks:
	case <-time.After(10 * time.Second):
		t.Fatal("the leader task never ran")
	}
	if err := fleet.Permitted(task); err != nil {
		t.Fatalf("permit while leading: %v", err)
	}
	leases.mu.Lock()
	leases.broken = true
	leases.mu.Unlock()
	e.clock.Advance(3 * time.Second) // in one step, as a process that was stopped sees it
	if err := fleet.Permitted(task); !errors.Is(err, fleet.ErrNotLeader) {
		t.Fatalf("permit once the lease may have lapsed: %v, want ErrNotLeader", err)
	}
}
