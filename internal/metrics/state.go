package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// StateSnapshot is the state's view at one moment, read at each scrape. A
// key that is absent gives no series, not a zero: include the zeros you
// want graphed (e.g. every configured pool's "queued").
type StateSnapshot struct {
	// Jobs counts jobs by {pool, state}, state as stored (queued,
	// in_progress, ...). Queued jobs per pool are Jobs[{pool, "queued"}].
	Jobs map[[2]string]int
	// Instances counts runner instances by {pool, state}, state as stored
	// (launching, started, busy, deleting, ...).
	Instances map[[2]string]int
	// OldestQueuedAge is, per pool, how long its oldest still-queued job has
	// waited. Pools with no queued job may be left out or given 0.
	OldestQueuedAge map[string]time.Duration
}

// SetStateSource sets the function read at each scrape to export the jobs,
// instances and job_oldest_queued_seconds gauges; nil removes it. The
// function runs on the scraping goroutine, possibly concurrently with
// itself: it must be safe for that and cheap (a few indexed queries).
func (m *Metrics) SetStateSource(src func() StateSnapshot) {
	if m == nil {
		return
	}
	m.state.set(src)
}

// stateCollector reads the gauges from the source at scrape time, so they
// are never stale and the scheduler need not keep them up to date.
type stateCollector struct {
	jobs, instances, oldest *prometheus.Desc

	mu  sync.Mutex
	src func() StateSnapshot
}

func newStateCollector() *stateCollector {
	return &stateCollector{
		jobs:      prometheus.NewDesc(JobsByState, "Jobs in the state, by pool and state.", []string{"pool", "state"}, nil),
		instances: prometheus.NewDesc(InstancesByState, "Runner instances in the state, by pool and state.", []string{"pool", "state"}, nil),
		oldest:    prometheus.NewDesc(JobOldestQueuedSeconds, "How long the oldest queued job of a pool has waited.", []string{"pool"}, nil),
	}
}

func (c *stateCollector) set(src func() StateSnapshot) {
	c.mu.Lock()
	c.src = src
	c.mu.Unlock()
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.jobs
	ch <- c.instances
	ch <- c.oldest
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	src := c.src
	c.mu.Unlock()
	if src == nil {
		return
	}
	s := src() // outside the lock: a slow source must not block SetStateSource
	for k, n := range s.Jobs {
		ch <- gauge(c.jobs, float64(n), value(k[0]), value(k[1]))
	}
	for k, n := range s.Instances {
		ch <- gauge(c.instances, float64(n), value(k[0]), value(k[1]))
	}
	for pool, age := range s.OldestQueuedAge {
		ch <- gauge(c.oldest, seconds(age), value(pool))
	}
}

// gauge reports a bad label value (invalid UTF-8) as a scrape error rather
// than panicking on the scraping goroutine.
func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	return m
}
