package metrics_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/metrics"
)

func TestInstrumentInstances(t *testing.T) {
	m := metrics.New("dev")
	g := m.Registry()
	if !m.LXDLastOK().IsZero() {
		t.Fatal("LXDLastOK set before any call")
	}
	inner := fleettest.NewInstances()
	inst := metrics.InstrumentInstances(inner, m)
	ctx := context.Background()

	spec := fleet.InstanceSpec{Name: "r-1", Image: "img", JITConfig: "s3cr3t", Config: map[string]string{"a": "b"},
		Labels: fleet.InstanceLabels{Pool: "linux", JobID: 5}}
	inner.FailNext(1)
	if err := inst.Create(ctx, spec); err == nil {
		t.Fatal("Create: want the injected failure")
	}
	want(t, g, metrics.LXDOperationsTotal, L{"op": "create", "result": "error"}, 1)
	if !m.LXDLastOK().IsZero() {
		t.Error("LXDLastOK set by a failed call")
	}

	before := time.Now()
	if err := inst.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if got, _ := inner.Spec("r-1"); got.JITConfig.Reveal() != "s3cr3t" || got.Config["a"] != "b" || got.Labels != spec.Labels {
		t.Errorf("Create did not pass its arguments through: %+v", got)
	}
	if last := m.LXDLastOK(); last.Before(before) || last.After(time.Now()) {
		t.Errorf("LXDLastOK = %v, want between %v and now", last, before)
	}
	want(t, g, metrics.LXDOperationsTotal, L{"op": "create", "result": "ok"}, 1)

	// The caller's context reaches LXD: a create that waits ends with it.
	release := inner.Block()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := inst.Create(cancelled, fleet.InstanceSpec{Name: "r-2", Image: "img"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Create with a cancelled context = %v", err)
	}
	release()
	want(t, g, metrics.LXDOperationsTotal, L{"op": "create", "result": "error"}, 2)

	if err := inst.Delete(ctx, "r-1"); err != nil || inner.Has("r-1") {
		t.Errorf("Delete: %v, still there: %v", err, inner.Has("r-1"))
	}
	want(t, g, metrics.LXDOperationsTotal, L{"op": "delete", "result": "ok"}, 1)

	// A missing instance is LXD's answer, not a failed call; the error
	// still reaches the caller as it was.
	if _, err := inst.Get(ctx, "gone"); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("Get(gone) error = %v, want ErrNotFound", err)
	}
	want(t, g, metrics.LXDOperationsTotal, L{"op": "get", "result": "ok"}, 1)

	inner.SetAway(true, "")
	if _, err := inst.Get(ctx, "any"); !errors.Is(err, fleet.ErrUnreachable) {
		t.Errorf("Get while LXD is away = %v, want ErrUnreachable", err)
	}
	if _, err := inst.List(ctx); !errors.Is(err, fleet.ErrUnreachable) {
		t.Errorf("List while LXD is away = %v, want ErrUnreachable", err)
	}
	inner.SetAway(false, "")
	if got, err := inst.List(ctx); err != nil || len(got) != 0 {
		t.Errorf("List = %v, %v; want none", got, err)
	}
	want(t, g, metrics.LXDOperationsTotal, L{"op": "get", "result": "error"}, 1)
	want(t, g, metrics.LXDOperationsTotal, L{"op": "list", "result": "error"}, 1)
	want(t, g, metrics.LXDOperationsTotal, L{"op": "list", "result": "ok"}, 1)

	// Every call is timed, failures too.
	want(t, g, metrics.LXDOperationDurationSeconds, L{"op": "create"}, 3)
	want(t, g, metrics.LXDOperationDurationSeconds, L{"op": "delete"}, 1)
	want(t, g, metrics.LXDOperationDurationSeconds, L{"op": "list"}, 2)
}

// TestInstrumentInstancesOnLXD wraps the real LXD client; it skips without
// LXD. Nothing is created: the image does not exist.
func TestInstrumentInstancesOnLXD(t *testing.T) {
	c := lxdtest.Connect(t)
	m := metrics.New("dev")
	inst := metrics.InstrumentInstances(c, m)
	ctx := lxdtest.Ctx(t)

	if _, err := inst.List(ctx); err != nil {
		t.Fatal(err)
	}
	if m.LXDLastOK().IsZero() {
		t.Error("LXDLastOK not set by a successful List")
	}
	if err := inst.Delete(ctx, lxdtest.Name(t)); err != nil { // gone already: success
		t.Fatal(err)
	}
	err := inst.Create(ctx, fleet.InstanceSpec{Name: lxdtest.Name(t), Image: lxdtest.Name(t), Type: "container"})
	if !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("Create from a missing image: %v, want an error matching ErrNotFound", err)
	}
	g := m.Registry()
	want(t, g, metrics.LXDOperationsTotal, L{"op": "list", "result": "ok"}, 1)
	want(t, g, metrics.LXDOperationsTotal, L{"op": "delete", "result": "ok"}, 1)
	want(t, g, metrics.LXDOperationsTotal, L{"op": "create", "result": "error"}, 1)
}
