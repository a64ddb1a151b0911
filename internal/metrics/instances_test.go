package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/metrics"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/scheduler"
)

// fakeInstances is a scheduler.Instances whose methods are function fields;
// a nil field succeeds and does nothing.
type fakeInstances struct {
	create func(context.Context, scheduler.InstanceSpec) error
	delete func(context.Context, string) error
	list   func(context.Context) ([]scheduler.Instance, error)
	get    func(context.Context, string) (scheduler.Instance, error)
}

func (f *fakeInstances) Get(ctx context.Context, name string) (scheduler.Instance, error) {
	if f.get == nil {
		return scheduler.Instance{Name: name}, nil
	}
	return f.get(ctx, name)
}

func (f *fakeInstances) Create(ctx context.Context, spec scheduler.InstanceSpec) error {
	if f.create == nil {
		return nil
	}
	return f.create(ctx, spec)
}

func (f *fakeInstances) Delete(ctx context.Context, name string) error {
	if f.delete == nil {
		return nil
	}
	return f.delete(ctx, name)
}

func (f *fakeInstances) List(ctx context.Context) ([]scheduler.Instance, error) {
	if f.list == nil {
		return nil, nil
	}
	return f.list(ctx)
}

type ctxKey struct{}

func TestInstrumentInstances(t *testing.T) {
	m := metrics.New("dev")
	g := m.Registry()
	if !m.LXDLastOK().IsZero() {
		t.Fatal("LXDLastOK set before any call")
	}

	var gotSpec scheduler.InstanceSpec
	var gotName string
	var gotCtx context.Context
	listed := []scheduler.Instance{{Name: "r-1", Pool: "linux", JobID: 5}}
	failList := true
	inner := &fakeInstances{
		create: func(ctx context.Context, spec scheduler.InstanceSpec) error {
			gotCtx, gotSpec = ctx, spec
			if spec.Image == "missing" {
				return fmt.Errorf("create instance %s: image missing: %w", spec.Name, scheduler.ErrNotFound)
			}
			return nil
		},
		delete: func(ctx context.Context, name string) error {
			gotName = name
			return nil
		},
		get: func(ctx context.Context, name string) (scheduler.Instance, error) {
			switch name {
			case "gone":
				return scheduler.Instance{}, fmt.Errorf("get instance gone: %w", scheduler.ErrNotFound)
			case "down":
				return scheduler.Instance{}, fmt.Errorf("get instance down: %w", scheduler.ErrUnreachable)
			}
			return scheduler.Instance{Name: name, Status: "Running"}, nil
		},
		list: func(ctx context.Context) ([]scheduler.Instance, error) {
			if failList {
				return nil, context.DeadlineExceeded
			}
			return listed, nil
		},
	}
	inst := metrics.InstrumentInstances(inner, m)
	ctx := context.WithValue(context.Background(), ctxKey{}, "mine")

	spec := scheduler.InstanceSpec{Name: "r-1", Image: "missing", JITConfig: "s3cr3t", Config: map[string]string{"a": "b"}}
	err := inst.Create(ctx, spec)
	if !errors.Is(err, scheduler.ErrNotFound) {
		t.Fatalf("Create error = %v, want one matching ErrNotFound", err)
	}
	if gotCtx.Value(ctxKey{}) != "mine" || gotSpec.Name != "r-1" || gotSpec.JITConfig.Reveal() != "s3cr3t" || gotSpec.Config["a"] != "b" {
		t.Errorf("Create did not pass its arguments through: %+v", gotSpec)
	}
	want(t, g, metrics.LXDOperationsTotal, L{"op": "create", "result": "error"}, 1)
	if !m.LXDLastOK().IsZero() {
		t.Error("LXDLastOK set by a failed call")
	}

	before := time.Now()
	spec.Image = "ok"
	if err := inst.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if last := m.LXDLastOK(); last.Before(before) || last.After(time.Now()) {
		t.Errorf("LXDLastOK = %v, want between %v and now", last, before)
	}
	want(t, g, metrics.LXDOperationsTotal, L{"op": "create", "result": "ok"}, 1)

	if err := inst.Delete(ctx, "r-2"); err != nil || gotName != "r-2" {
		t.Errorf("Delete: %v, name %q", err, gotName)
	}
	want(t, g, metrics.LXDOperationsTotal, L{"op": "delete", "result": "ok"}, 1)

	if _, err := inst.List(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("List error = %v, want DeadlineExceeded", err)
	}
	failList = false
	got, err := inst.List(ctx)
	if err != nil || len(got) != 1 || got[0] != listed[0] {
		t.Errorf("List = %v, %v; want %v", got, err, listed)
	}
	want(t, g, metrics.LXDOperationsTotal, L{"op": "list", "result": "error"}, 1)
	want(t, g, metrics.LXDOperationsTotal, L{"op": "list", "result": "ok"}, 1)

	// A missing instance is LXD's answer, not a failed call; the error
	// still reaches the caller.
	if in, err := inst.Get(ctx, "r-3"); err != nil || in.Status != "Running" {
		t.Errorf("Get = %+v, %v", in, err)
	}
	if _, err := inst.Get(ctx, "gone"); !errors.Is(err, scheduler.ErrNotFound) {
		t.Errorf("Get(gone) error = %v, want ErrNotFound", err)
	}
	if _, err := inst.Get(ctx, "down"); !errors.Is(err, scheduler.ErrUnreachable) {
		t.Errorf("Get(down) error = %v, want ErrUnreachable", err)
	}
	want(t, g, metrics.LXDOperationsTotal, L{"op": "get", "result": "ok"}, 2)
	want(t, g, metrics.LXDOperationsTotal, L{"op": "get", "result": "error"}, 1)

	// Every call is timed, failures too.
	want(t, g, metrics.LXDOperationDurationSeconds, L{"op": "create"}, 2)
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
	err := inst.Create(ctx, scheduler.InstanceSpec{Name: lxdtest.Name(t), Image: lxdtest.Name(t), Type: "container"})
	if !errors.Is(err, scheduler.ErrNotFound) {
		t.Fatalf("Create from a missing image: %v, want an error matching ErrNotFound", err)
	}
	g := m.Registry()
	want(t, g, metrics.LXDOperationsTotal, L{"op": "list", "result": "ok"}, 1)
	want(t, g, metrics.LXDOperationsTotal, L{"op": "delete", "result": "ok"}, 1)
	want(t, g, metrics.LXDOperationsTotal, L{"op": "create", "result": "error"}, 1)
}
