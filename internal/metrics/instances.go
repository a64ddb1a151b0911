package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// InstrumentInstances wraps inner to count and time each LXD operation and
// to record the last success for LXDLastOK. Arguments, results and errors
// pass through untouched, so errors.Is(err, fleet.ErrNotFound) still
// works. With a nil m it returns inner unchanged.
//
// Only the fleet.Instances methods are wrapped: keep the concrete client
// for anything else (e.g. a readiness ping).
func InstrumentInstances(inner fleet.Instances, m *Metrics) fleet.Instances {
	if m == nil {
		return inner
	}
	return &instances{inner: inner, m: m}
}

type instances struct {
	inner fleet.Instances
	m     *Metrics
}

func (i *instances) Create(ctx context.Context, spec fleet.InstanceSpec) error {
	start := time.Now()
	err := i.inner.Create(ctx, spec)
	i.m.lxdOp(OpCreate, start, err)
	return err
}

func (i *instances) Delete(ctx context.Context, name string) error {
	start := time.Now()
	err := i.inner.Delete(ctx, name)
	i.m.lxdOp(OpDelete, start, err)
	return err
}

func (i *instances) List(ctx context.Context) ([]fleet.Instance, error) {
	start := time.Now()
	list, err := i.inner.List(ctx)
	i.m.lxdOp(OpList, start, err)
	return list, err
}

func (i *instances) Get(ctx context.Context, name string) (fleet.Instance, error) {
	start := time.Now()
	in, err := i.inner.Get(ctx, name)
	failed := err
	if errors.Is(err, fleet.ErrNotFound) {
		failed = nil // LXD answered: a missing instance is an answer, not a failure
	}
	i.m.lxdOp(OpGet, start, failed)
	return in, err
}

func (i *instances) Prepare(ctx context.Context, spec fleet.InstanceSpec) error {
	start := time.Now()
	err := i.inner.Prepare(ctx, spec)
	i.m.lxdOp(OpPrepare, start, err)
	return err
}

func (i *instances) StartPrepared(ctx context.Context, name string, labels fleet.InstanceLabels, jit fleet.Secret) error {
	start := time.Now()
	err := i.inner.StartPrepared(ctx, name, labels, jit)
	i.m.lxdOp(OpStartPrepared, start, err)
	return err
}

func (i *instances) ImageFingerprint(ctx context.Context, image string) (string, error) {
	start := time.Now()
	fp, err := i.inner.ImageFingerprint(ctx, image)
	failed := err
	if errors.Is(err, fleet.ErrNotFound) {
		failed = nil // an answer, as for Get
	}
	i.m.lxdOp(OpImage, start, failed)
	return fp, err
}

func (m *Metrics) lxdOp(op string, start time.Time, err error) {
	now := time.Now()
	m.lxdDuration.WithLabelValues(op).Observe(now.Sub(start).Seconds())
	result := ResultOK
	if err != nil {
		result = ResultError
	} else {
		m.lxdLastOK.Store(now.UnixNano())
	}
	m.lxdOps.WithLabelValues(op, result).Inc()
}
