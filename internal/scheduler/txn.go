package scheduler

import (
	"context"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// txn runs fn in one state transaction. What fn reports to m reaches the
// scheduler's metrics only once the transaction commits: a step that rolls
// back and is applied again must not count twice.
func (s *Scheduler) txn(ctx context.Context, fn func(tx fleet.Tx, m fleet.Metrics) error) error {
	var m afterCommit
	err := s.st.Update(ctx, func(tx fleet.Tx) error {
		m = m[:0] // a backend may run fn again
		return fn(tx, &m)
	})
	if err != nil {
		return err
	}
	for _, report := range m {
		report(s.m)
	}
	return nil
}

// update changes one runner row in its own transaction, outside a step;
// fn reports whether to write the row.
func (s *Scheduler) update(name string, fn func(*fleet.Runner) bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.work), s.cfg.Timeouts.StateWrite)
	defer cancel()
	return s.st.Update(ctx, func(tx fleet.Tx) error {
		r, err := tx.Runner(name)
		if err != nil {
			return err
		}
		if !fn(&r) {
			return nil
		}
		return tx.PutRunner(r)
	})
}

// event appends to a job's timeline outside a step; a failure is logged,
// since the timeline is for people and must not stop the work.
func (s *Scheduler) event(jobID int64, kind, detail string) {
	if jobID == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.work), s.cfg.Timeouts.StateWrite)
	defer cancel()
	now := s.clock.Now()
	if err := s.st.Update(ctx, func(tx fleet.Tx) error { return tx.AddEvent(jobID, now, kind, detail) }); err != nil {
		s.log.Warn().Err(err).Int64("job_id", jobID).Msg("record timeline event")
	}
}

// jobOf returns the job a runner's timeline events belong to: the job that
// ran on it if any, else the job whose queued event caused its launch.
func jobOf(tx fleet.Tx, r fleet.Runner) int64 {
	if j, err := tx.JobByRunner(r.Name); err == nil {
		return j.ID
	}
	return r.JobID
}

// afterCommit holds metrics reports until the transaction they describe
// has committed.
type afterCommit []func(fleet.Metrics)

var _ fleet.Metrics = (*afterCommit)(nil)

func (a *afterCommit) add(f func(fleet.Metrics)) { *a = append(*a, f) }

func (a *afterCommit) JobQueued(pool string) { a.add(func(m fleet.Metrics) { m.JobQueued(pool) }) }
func (a *afterCommit) JobIgnored(reason string) {
	a.add(func(m fleet.Metrics) { m.JobIgnored(reason) })
}
func (a *afterCommit) JobStarted(pool string, wait time.Duration) {
	a.add(func(m fleet.Metrics) { m.JobStarted(pool, wait) })
}
func (a *afterCommit) JobCompleted(pool, conclusion string, run time.Duration) {
	a.add(func(m fleet.Metrics) { m.JobCompleted(pool, conclusion, run) })
}
func (a *afterCommit) Launch(pool, result string, d time.Duration) {
	a.add(func(m fleet.Metrics) { m.Launch(pool, result, d) })
}
func (a *afterCommit) RunnerReady(pool string, d time.Duration) {
	a.add(func(m fleet.Metrics) { m.RunnerReady(pool, d) })
}
func (a *afterCommit) Teardown(pool string, mode fleet.DeleteMode) {
	a.add(func(m fleet.Metrics) { m.Teardown(pool, mode) })
}
func (a *afterCommit) ReconcileAction(kind string) {
	a.add(func(m fleet.Metrics) { m.ReconcileAction(kind) })
}
func (a *afterCommit) ReconcileError()           { a.add(func(m fleet.Metrics) { m.ReconcileError() }) }
func (a *afterCommit) ReconcileDone(t time.Time) { a.add(func(m fleet.Metrics) { m.ReconcileDone(t) }) }
