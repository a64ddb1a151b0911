// Package metrics holds the service's Prometheus metrics: one private
// registry per Metrics value (never the global one), the methods the other
// packages call to record what happened, a collector that reads gauges from
// the state at scrape time, and decorators for the GitHub HTTP transport and
// the LXD instances.
//
// Every method is safe on a nil *Metrics and then does nothing, so tests and
// callers that do not want metrics pass nil. Consumers should declare small
// interfaces with just the methods they call.
//
// Label values are expected to be bounded: pool names come from the config,
// reasons, kinds and results are short codes chosen by the caller. Values
// that come from outside (the webhook event, a job's conclusion, an HTTP
// method) are folded into a fixed set here.
package metrics

import (
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Histogram buckets, in seconds, sized to what each one measures.
var (
	queueWaitBuckets = []float64{1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200}
	launchBuckets    = []float64{0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 20, 30, 60, 120}
	readyBuckets     = []float64{1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600}
	runBuckets       = []float64{10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 21600}
	githubBuckets    = []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30}
	lxdBuckets       = []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60}
)

// Metrics records the service's metrics in its own registry. Create it with
// New; a nil *Metrics is valid and records nothing.
type Metrics struct {
	reg     *prometheus.Registry
	handler http.Handler
	state   *stateCollector

	webhooks      *prometheus.CounterVec
	redeliveries  prometheus.Counter
	jobsQueued    *prometheus.CounterVec
	jobsIgnored   *prometheus.CounterVec
	jobsStarted   *prometheus.CounterVec
	jobsCompleted *prometheus.CounterVec
	queueWait     *prometheus.HistogramVec
	runTime       *prometheus.HistogramVec

	launches     *prometheus.CounterVec
	launchTime   *prometheus.HistogramVec
	readyTime    *prometheus.HistogramVec
	teardowns    *prometheus.CounterVec
	imageBuilds  *prometheus.CounterVec
	reconActions *prometheus.CounterVec
	reconErrors  prometheus.Counter
	reconLast    prometheus.Gauge

	ghRequests  *prometheus.CounterVec
	ghDuration  *prometheus.HistogramVec
	ghRateLimit *prometheus.GaugeVec // no labels: a vector so that it is absent until GitHub first tells

	leader        prometheus.Gauge
	leaderChanges prometheus.Counter
	renewals      *prometheus.CounterVec

	lxdOps      *prometheus.CounterVec
	lxdDuration *prometheus.HistogramVec
	lxdLastOK   atomic.Int64 // unix nanoseconds of the last successful LXD call; 0: never
}

// New creates the metrics in a fresh registry that also holds the Go and
// process collectors and build_info{version,goversion} = 1.
func New(version string) *Metrics {
	reg := prometheus.NewRegistry()
	f := factory{reg}
	m := &Metrics{
		reg:   reg,
		state: newStateCollector(),

		webhooks:     f.counterVec(WebhooksReceivedTotal, "Webhook deliveries received, by event and result.", "event", "result"),
		redeliveries: f.counter(WebhookRedeliveriesTotal, "Webhook redeliveries asked of GitHub for deliveries that never reached us."),

		jobsQueued:    f.counterVec(JobsQueuedTotal, "Queued workflow jobs given to a pool.", "pool"),
		jobsIgnored:   f.counterVec(JobsIgnoredTotal, "Queued workflow jobs ignored, by reason.", "reason"),
		jobsStarted:   f.counterVec(JobsStartedTotal, "Workflow jobs of a pool that went in progress.", "pool"),
		jobsCompleted: f.counterVec(JobsCompletedTotal, "Workflow jobs of a pool that completed, by conclusion.", "pool", "conclusion"),
		queueWait:     f.histogramVec(JobQueueWaitSeconds, "Time from a job queued to in progress.", queueWaitBuckets, "pool"),
		runTime:       f.histogramVec(JobRunSeconds, "Time from a job in progress to completed.", runBuckets, "pool"),

		launches:     f.counterVec(LaunchesTotal, "Runner launches (JIT config, LXD create and start), by result.", "pool", "result"),
		launchTime:   f.histogramVec(InstanceLaunchSeconds, "Time LXD took to create and start a runner instance, successful launches only.", launchBuckets, "pool"),
		readyTime:    f.histogramVec(RunnerReadySeconds, "Time from a launch to its runner seen online or busy.", readyBuckets, "pool"),
		teardowns:    f.counterVec(TeardownsTotal, "Runner instances torn down, by reason.", "pool", "reason"),
		imageBuilds:  f.counterVec(ImageBuildsTotal, "Runner image builds by the service's rebuild schedule, by result (ok or error).", "image", "result"),
		reconActions: f.counterVec(ReconcileActionsTotal, "Corrective actions taken by the reconciler, by kind.", "kind"),
		reconErrors:  f.counter(ReconcileErrorsTotal, "Reconcile rounds that failed."),
		reconLast:    f.gauge(LastReconcileTimestampSeconds, "Unix time of the last reconcile round that completed."),

		ghRequests:  f.counterVec(GitHubRequestsTotal, "GitHub API HTTP attempts, by route, method and status code (\"error\": no answer).", "endpoint", "method", "status"),
		ghDuration:  f.histogramVec(GitHubRequestDurationSeconds, "Time to GitHub's response headers, per attempt.", githubBuckets, "endpoint"),
		ghRateLimit: f.gaugeVec(GitHubRateLimitRemaining, "X-RateLimit-Remaining of the last GitHub answer that carried it."),

		leader:        f.gauge(LeaderRole, "1 while this replica leads (decides and acts), else 0."),
		leaderChanges: f.counter(LeaderChangesTotal, "Terms of leadership this replica started."),
		renewals:      f.counterVec(LeaseRenewalsTotal, "Renewals of this replica's lease, by result (ok, error, lost).", "result"),

		lxdOps:      f.counterVec(LXDOperationsTotal, "LXD operations, by result.", "op", "result"),
		lxdDuration: f.histogramVec(LXDOperationDurationSeconds, "Time LXD operations took, errors included.", lxdBuckets, "op"),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        BuildInfo,
		Help:        "Always 1; the labels tell the build.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	reg.MustRegister(
		build,
		m.state,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// Registry in the options adds promhttp's own error counter to reg.
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, ErrorHandling: promhttp.ContinueOnError})
	return m
}

// Handler serves the registry in the Prometheus exposition formats. On a nil
// *Metrics it answers 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return m.handler
}

// Registry returns the private registry (nil on a nil *Metrics), for tests
// and for registering more collectors.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// WebhookReceived counts one delivery answered by POST /webhook. result is
// one of accepted, duplicate, ignored, stale, bad_signature, too_large,
// bad_request, busy, error. The event comes from an unauthenticated header: anything but
// workflow_job and ping counts as "other" ("none" when empty).
func (m *Metrics) WebhookReceived(event, result string) {
	if m == nil {
		return
	}
	m.webhooks.WithLabelValues(foldEvent(event), value(result)).Inc()
}

// Redelivered counts n redeliveries asked of GitHub.
func (m *Metrics) Redelivered(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.redeliveries.Add(float64(n))
}

// JobQueued counts a queued job given to pool.
func (m *Metrics) JobQueued(pool string) {
	if m == nil {
		return
	}
	m.jobsQueued.WithLabelValues(value(pool)).Inc()
}

// JobIgnored counts a queued job no pool takes. reason is a short code
// (no_pool, public_repository, repository_not_allowed, ...), never free text.
func (m *Metrics) JobIgnored(reason string) {
	if m == nil {
		return
	}
	m.jobsIgnored.WithLabelValues(value(reason)).Inc()
}

// JobStarted counts a job of pool going in progress, queueWait after it was
// queued.
func (m *Metrics) JobStarted(pool string, queueWait time.Duration) {
	if m == nil {
		return
	}
	pool = value(pool)
	m.jobsStarted.WithLabelValues(pool).Inc()
	m.queueWait.WithLabelValues(pool).Observe(seconds(queueWait))
}

// JobCompleted counts a completed job of pool that ran for runTime.
// conclusion is GitHub's (success, failure, cancelled, ...); unknown values
// count as "other", an empty one as "none".
func (m *Metrics) JobCompleted(pool, conclusion string, runTime time.Duration) {
	if m == nil {
		return
	}
	pool = value(pool)
	m.jobsCompleted.WithLabelValues(pool, foldConclusion(conclusion)).Inc()
	m.runTime.WithLabelValues(pool).Observe(seconds(runTime))
}

// Launch counts a launch with result ResultOK or ResultError. d, the time
// LXD took to create and start the instance, is observed only for ResultOK.
func (m *Metrics) Launch(pool, result string, d time.Duration) {
	if m == nil {
		return
	}
	pool = value(pool)
	m.launches.WithLabelValues(pool, value(result)).Inc()
	if result == ResultOK {
		m.launchTime.WithLabelValues(pool).Observe(seconds(d))
	}
}

// RunnerReady records the time d from a launch to its runner first seen
// online or busy.
func (m *Metrics) RunnerReady(pool string, d time.Duration) {
	if m == nil {
		return
	}
	m.readyTime.WithLabelValues(value(pool)).Observe(seconds(d))
}

// Teardown counts a runner torn down. reason is one of job_done, surplus,
// registration_timeout, max_job_duration, idle_age, interrupted, reconcile.
func (m *Metrics) Teardown(pool string, mode fleet.DeleteMode) {
	if m == nil {
		return
	}
	m.teardowns.WithLabelValues(value(pool), value(string(mode))).Inc()
}

// LeaderRole sets whether this replica leads.
func (m *Metrics) LeaderRole(leading bool) {
	if m == nil {
		return
	}
	v := 0.0
	if leading {
		v = 1
	}
	m.leader.Set(v)
}

// LeaderChange counts a term of leadership this replica started.
func (m *Metrics) LeaderChange() {
	if m == nil {
		return
	}
	m.leaderChanges.Inc()
}

// LeaseRenewal counts one renewal of the lease by result: ok, error, lost.
func (m *Metrics) LeaseRenewal(result string) {
	if m == nil {
		return
	}
	m.renewals.WithLabelValues(value(result)).Inc()
}

// ImageBuild counts one scheduled image rebuild; result is ok or error.
// image is an image name from the config.
func (m *Metrics) ImageBuild(image, result string) {
	if m == nil {
		return
	}
	m.imageBuilds.WithLabelValues(value(image), value(result)).Inc()
}

// ReconcileAction counts one corrective action of the reconciler; kind is a
// short code.
func (m *Metrics) ReconcileAction(kind string) {
	if m == nil {
		return
	}
	m.reconActions.WithLabelValues(value(kind)).Inc()
}

// ReconcileError counts a reconcile round that failed.
func (m *Metrics) ReconcileError() {
	if m == nil {
		return
	}
	m.reconErrors.Inc()
}

// ReconcileDone records the end of a reconcile round that completed without
// error; the staleness alert reads it, so do not call it for failed rounds.
func (m *Metrics) ReconcileDone(t time.Time) {
	if m == nil {
		return
	}
	m.reconLast.Set(float64(t.UnixNano()) / 1e9)
}

// LXDLastOK returns when an LXD call through InstrumentInstances last
// succeeded; zero if never (or on a nil *Metrics). Readiness reads it.
func (m *Metrics) LXDLastOK() time.Time {
	if m == nil {
		return time.Time{}
	}
	ns := m.lxdLastOK.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// seconds converts d for a histogram; a negative d (clock skew between
// GitHub's timestamps and ours) counts as 0.
func seconds(d time.Duration) float64 {
	if d < 0 {
		return 0
	}
	return d.Seconds()
}

// value keeps an empty label value visible (Prometheus treats "" as absent)
// and makes it valid UTF-8, without which WithLabelValues panics.
func value(s string) string {
	if s == "" {
		return "none"
	}
	if !utf8.ValidString(s) {
		return strings.ToValidUTF8(s, "\uFFFD")
	}
	return s
}

func foldEvent(event string) string {
	switch event {
	case "workflow_job", "ping":
		return event
	case "":
		return "none"
	}
	return "other"
}

func foldConclusion(c string) string {
	switch c {
	case "success", "failure", "cancelled", "skipped", "neutral", "timed_out",
		"action_required", "stale", "startup_failure":
		return c
	case "":
		return "none"
	}
	return "other"
}

// factory creates metrics and registers them in one registry.
type factory struct{ reg prometheus.Registerer }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}
