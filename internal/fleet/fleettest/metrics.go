package fleettest

import (
	"fmt"
	"sync"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// Metrics records what the scheduler reports: a count per call and label,
// e.g. "JobQueued linux" or "Teardown linux surplus", and the durations
// observed per call name.
type Metrics struct {
	mu        sync.Mutex
	counts    map[string]int
	durations map[string][]time.Duration
}

var _ fleet.Metrics = (*Metrics)(nil)

// NewMetrics returns an empty recorder.
func NewMetrics() *Metrics {
	return &Metrics{counts: map[string]int{}, durations: map[string][]time.Duration{}}
}

func (m *Metrics) add(key string, d ...time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counts[key]++
	name := key
	for i, c := range key {
		if c == ' ' {
			name = key[:i]
			break
		}
	}
	m.durations[name] = append(m.durations[name], d...)
}

// Count returns how often key was reported.
func (m *Metrics) Count(key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counts[key]
}

// Durations returns the durations observed by a call (e.g. "RunnerReady").
func (m *Metrics) Durations(call string) []time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]time.Duration(nil), m.durations[call]...)
}

func (m *Metrics) JobQueued(pool string)    { m.add("JobQueued " + pool) }
func (m *Metrics) JobIgnored(reason string) { m.add("JobIgnored " + reason) }
func (m *Metrics) JobStarted(pool string, wait time.Duration) {
	m.add("JobStarted "+pool, wait)
}
func (m *Metrics) JobCompleted(pool, conclusion string, run time.Duration) {
	m.add("JobCompleted "+pool+" "+conclusion, run)
}
func (m *Metrics) Launch(pool, result string, d time.Duration) { m.add("Launch "+pool+" "+result, d) }
func (m *Metrics) RunnerReady(pool string, d time.Duration)    { m.add("RunnerReady "+pool, d) }
func (m *Metrics) Teardown(pool string, mode fleet.DeleteMode) {
	m.add(fmt.Sprintf("Teardown %s %s", pool, mode))
}
func (m *Metrics) ReconcileAction(kind string) { m.add("ReconcileAction " + kind) }
func (m *Metrics) ReconcileError()             { m.add("ReconcileError") }
func (m *Metrics) ReconcileDone(time.Time)     { m.add("ReconcileDone") }
