package fleet

import "time"

// Metrics is what the scheduler reports; internal/metrics satisfies it.
// Labels are pool names from the config and short fixed codes only.
type Metrics interface {
	JobQueued(pool string)
	JobIgnored(reason string)
	JobStarted(pool string, queueWait time.Duration)
	JobCompleted(pool, conclusion string, runTime time.Duration)
	Launch(pool, result string, d time.Duration)
	RunnerReady(pool string, d time.Duration)
	Teardown(pool string, mode DeleteMode)
	ReconcileAction(kind string)
	ReconcileError()
	ReconcileDone(t time.Time)
}

// NopMetrics reports nothing.
type NopMetrics struct{}

var _ Metrics = NopMetrics{}

func (NopMetrics) JobQueued(string)                           {}
func (NopMetrics) JobIgnored(string)                          {}
func (NopMetrics) JobStarted(string, time.Duration)           {}
func (NopMetrics) JobCompleted(string, string, time.Duration) {}
func (NopMetrics) Launch(string, string, time.Duration)       {}
func (NopMetrics) RunnerReady(string, time.Duration)          {}
func (NopMetrics) Teardown(string, DeleteMode)                {}
func (NopMetrics) ReconcileAction(string)                     {}
func (NopMetrics) ReconcileError()                            {}
func (NopMetrics) ReconcileDone(time.Time)                    {}
