package metrics_test

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/metrics"
)

// sample returns the value of the series name{labels} as gathered from the
// registry: a counter's or gauge's value, or a histogram's observation
// count. ok is false when there is no such series.
func sample(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) (v float64, ok bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue(), true
			case dto.MetricType_GAUGE:
				return m.GetGauge().GetValue(), true
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount()), true
			default:
				t.Fatalf("%s: unexpected type %v", name, mf.GetType())
			}
		}
	}
	return 0, false
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, lp := range m.GetLabel() {
		got[lp.GetName()] = lp.GetValue()
	}
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// histSum returns the sum of the observations of histogram name{labels}.
func histSum(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				return m.GetHistogram().GetSampleSum()
			}
		}
	}
	t.Fatalf("no histogram %s%v", name, labels)
	return 0
}

func want(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string, v float64) {
	t.Helper()
	got, ok := sample(t, g, name, labels)
	if !ok {
		t.Errorf("no series %s%v", name, labels)
		return
	}
	if math.Abs(got-v) > 1e-9 {
		t.Errorf("%s%v = %v, want %v", name, labels, got, v)
	}
}

func wantAbsent(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) {
	t.Helper()
	if v, ok := sample(t, g, name, labels); ok {
		t.Errorf("%s%v = %v, want no series", name, labels, v)
	}
}

type L = map[string]string

// touchAll records one of everything, so that every family has a series.
func touchAll(m *metrics.Metrics) {
	m.WebhookReceived("workflow_job", "accepted")
	m.Redelivered(1)
	m.JobQueued("linux")
	m.JobIgnored("no_pool")
	m.JobStarted("linux", time.Second)
	m.JobCompleted("linux", "success", time.Minute)
	m.Launch("linux", metrics.ResultOK, 2*time.Second)
	m.RunnerReady("linux", 3*time.Second)
	m.Teardown("linux", "job_done")
	m.ImageBuild("debian-runner", metrics.ResultOK)
	m.LeaseRenewal("ok")
	m.ReconcileAction("delete_orphan")
	m.ReconcileError()
	m.ReconcileDone(time.Unix(1700000000, 0))
	m.SetStateSource(func() metrics.StateSnapshot {
		return metrics.StateSnapshot{
			Jobs:            map[[2]string]int{{"linux", "queued"}: 1},
			Instances:       map[[2]string]int{{"linux", "started"}: 1},
			OldestQueuedAge: map[string]time.Duration{"linux": time.Second},
		}
	})
	rt := metrics.GitHubTransport(roundTripFunc(func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{"X-Ratelimit-Remaining": {"10"}}, Body: http.NoBody}, nil
	}), m)
	req, _ := http.NewRequest(http.MethodGet, "https://api.github.com/app/hook/deliveries", nil)
	if resp, err := rt.RoundTrip(req); err == nil {
		resp.Body.Close()
	}
	inst := metrics.InstrumentInstances(fleettest.NewInstances(), m)
	_, _ = inst.List(context.Background())
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestMethodsMoveTheirSeries(t *testing.T) {
	m := metrics.New("v1.2.3")
	g := m.Registry()

	m.WebhookReceived("workflow_job", "accepted")
	m.WebhookReceived("workflow_job", "accepted")
	m.WebhookReceived("ping", "ignored")
	want(t, g, metrics.WebhooksReceivedTotal, L{"event": "workflow_job", "result": "accepted"}, 2)
	want(t, g, metrics.WebhooksReceivedTotal, L{"event": "ping", "result": "ignored"}, 1)

	m.Redelivered(3)
	m.Redelivered(0)
	m.Redelivered(-2) // a counter cannot go down: ignored
	want(t, g, metrics.WebhookRedeliveriesTotal, nil, 3)

	m.JobQueued("linux")
	m.JobIgnored("public_repository")
	want(t, g, metrics.JobsQueuedTotal, L{"pool": "linux"}, 1)
	want(t, g, metrics.JobsIgnoredTotal, L{"reason": "public_repository"}, 1)

	m.JobStarted("linux", 90*time.Second)
	want(t, g, metrics.JobsStartedTotal, L{"pool": "linux"}, 1)
	want(t, g, metrics.JobQueueWaitSeconds, L{"pool": "linux"}, 1)
	if s := histSum(t, g, metrics.JobQueueWaitSeconds, L{"pool": "linux"}); s != 90 {
		t.Errorf("queue wait sum = %v, want 90", s)
	}

	m.JobCompleted("linux", "failure", 10*time.Minute)
	want(t, g, metrics.JobsCompletedTotal, L{"pool": "linux", "conclusion": "failure"}, 1)
	want(t, g, metrics.JobRunSeconds, L{"pool": "linux"}, 1)
	if s := histSum(t, g, metrics.JobRunSeconds, L{"pool": "linux"}); s != 600 {
		t.Errorf("run time sum = %v, want 600", s)
	}

	m.Launch("linux", metrics.ResultOK, 1500*time.Millisecond)
	m.Launch("linux", metrics.ResultError, 30*time.Second)
	want(t, g, metrics.LaunchesTotal, L{"pool": "linux", "result": "ok"}, 1)
	want(t, g, metrics.LaunchesTotal, L{"pool": "linux", "result": "error"}, 1)
	// Only the successful launch is timed.
	want(t, g, metrics.InstanceLaunchSeconds, L{"pool": "linux"}, 1)
	if s := histSum(t, g, metrics.InstanceLaunchSeconds, L{"pool": "linux"}); s != 1.5 {
		t.Errorf("launch time sum = %v, want 1.5", s)
	}

	m.RunnerReady("arm64", 4*time.Second)
	want(t, g, metrics.RunnerReadySeconds, L{"pool": "arm64"}, 1)

	for _, r := range []fleet.DeleteMode{fleet.ModeJobDone, fleet.ModeSurplus, fleet.ModeJobDone} {
		m.Teardown("linux", r)
	}
	want(t, g, metrics.TeardownsTotal, L{"pool": "linux", "reason": "job_done"}, 2)
	want(t, g, metrics.TeardownsTotal, L{"pool": "linux", "reason": "surplus"}, 1)

	m.ReconcileAction("close_runner")
	m.ReconcileError()
	m.ReconcileError()
	at := time.Date(2025, 1, 2, 3, 4, 5, 500_000_000, time.UTC)
	m.ReconcileDone(at)
	want(t, g, metrics.ReconcileActionsTotal, L{"kind": "close_runner"}, 1)
	want(t, g, metrics.ReconcileErrorsTotal, nil, 2)
	want(t, g, metrics.LastReconcileTimestampSeconds, nil, float64(at.Unix())+0.5)

	want(t, g, metrics.BuildInfo, L{"version": "v1.2.3", "goversion": runtime.Version()}, 1)
}

func TestOutsideValuesAreFolded(t *testing.T) {
	m := metrics.New("dev")
	g := m.Registry()
	// The event header of an unauthenticated request can hold anything.
	m.WebhookReceived("installation", "ignored")
	m.WebhookReceived("x\xff\xfe-random-123", "bad_signature")
	m.WebhookReceived("", "bad_request")
	want(t, g, metrics.WebhooksReceivedTotal, L{"event": "other", "result": "ignored"}, 1)
	want(t, g, metrics.WebhooksReceivedTotal, L{"event": "other", "result": "bad_signature"}, 1)
	want(t, g, metrics.WebhooksReceivedTotal, L{"event": "none", "result": "bad_request"}, 1)

	m.JobCompleted("linux", "", time.Second)
	m.JobCompleted("linux", "something_new", time.Second)
	want(t, g, metrics.JobsCompletedTotal, L{"pool": "linux", "conclusion": "none"}, 1)
	want(t, g, metrics.JobsCompletedTotal, L{"pool": "linux", "conclusion": "other"}, 1)

	// Empty and invalid UTF-8 values of caller codes neither vanish nor panic.
	m.Teardown("", "reconcile")
	want(t, g, metrics.TeardownsTotal, L{"pool": "none", "reason": "reconcile"}, 1)
	m.JobIgnored("bad\xff")
	want(t, g, metrics.JobsIgnoredTotal, L{"reason": "bad\uFFFD"}, 1)

	// Clock skew must not give negative observations.
	m.JobStarted("linux", -time.Minute)
	if s := histSum(t, g, metrics.JobQueueWaitSeconds, L{"pool": "linux"}); s != 0 {
		t.Errorf("queue wait sum = %v, want 0", s)
	}
}

func TestStateIsReadAtScrapeTime(t *testing.T) {
	m := metrics.New("dev")
	g := m.Registry()
	if n, err := testutil.GatherAndCount(g, metrics.JobsByState, metrics.InstancesByState, metrics.JobOldestQueuedSeconds); err != nil || n != 0 {
		t.Fatalf("without a source: %d series (err %v), want 0", n, err)
	}

	var mu sync.Mutex
	queued := 3
	m.SetStateSource(func() metrics.StateSnapshot {
		mu.Lock()
		defer mu.Unlock()
		return metrics.StateSnapshot{
			Jobs: map[[2]string]int{
				{"linux", "queued"}:      queued,
				{"linux", "in_progress"}: 2,
				{"arm64", "queued"}:      0,
			},
			Instances: map[[2]string]int{
				{"linux", "launching"}: 1,
				{"linux", "busy"}:      2,
			},
			OldestQueuedAge: map[string]time.Duration{"linux": 11 * time.Minute, "arm64": 0},
		}
	})
	want(t, g, metrics.JobsByState, L{"pool": "linux", "state": "queued"}, 3)
	want(t, g, metrics.JobsByState, L{"pool": "linux", "state": "in_progress"}, 2)
	want(t, g, metrics.JobsByState, L{"pool": "arm64", "state": "queued"}, 0)
	want(t, g, metrics.InstancesByState, L{"pool": "linux", "state": "launching"}, 1)
	want(t, g, metrics.InstancesByState, L{"pool": "linux", "state": "busy"}, 2)
	want(t, g, metrics.JobOldestQueuedSeconds, L{"pool": "linux"}, 660)
	want(t, g, metrics.JobOldestQueuedSeconds, L{"pool": "arm64"}, 0)
	wantAbsent(t, g, metrics.InstancesByState, L{"pool": "arm64", "state": "busy"})

	mu.Lock()
	queued = 0
	mu.Unlock()
	want(t, g, metrics.JobsByState, L{"pool": "linux", "state": "queued"}, 0)

	m.SetStateSource(nil)
	wantAbsent(t, g, metrics.JobsByState, L{"pool": "linux", "state": "queued"})
}

func TestHandlerServesTheRegistry(t *testing.T) {
	m := metrics.New("v9")
	touchAll(m)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	text := string(body)
	for _, s := range []string{
		`lxd_gha_autoscaler_build_info{goversion="` + runtime.Version() + `",version="v9"} 1`,
		`lxd_gha_autoscaler_jobs{pool="linux",state="queued"} 1`,
		`lxd_gha_autoscaler_webhooks_received_total{event="workflow_job",result="accepted"} 1`,
		"\ngo_goroutines ",
		"\nprocess_start_time_seconds ", // Linux only, as is this service
	} {
		if !strings.Contains(text, s) {
			t.Errorf("scrape lacks %q", s)
		}
	}
}

func TestRegistryIsPrivate(t *testing.T) {
	a, b := metrics.New("a"), metrics.New("b") // would panic on a shared registry
	a.JobQueued("linux")
	if _, ok := sample(t, b.Registry(), metrics.JobsQueuedTotal, L{"pool": "linux"}); ok {
		t.Error("a's series shows in b's registry")
	}
	if _, ok := sample(t, prometheus.DefaultGatherer, metrics.BuildInfo, L{"version": "a", "goversion": runtime.Version()}); ok {
		t.Error("build info is in the global registry")
	}
}

func TestNamesAreExactlyWhatIsRegistered(t *testing.T) {
	m := metrics.New("dev")
	touchAll(m)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), metrics.Prefix) {
			got = append(got, mf.GetName())
		}
	}
	names := metrics.Names()
	sort.Strings(got)
	sort.Strings(names)
	if !slices.Equal(got, names) {
		t.Errorf("registered %v\nNames() %v", got, names)
	}
}

func TestLint(t *testing.T) {
	m := metrics.New("dev")
	touchAll(m)
	problems, err := testutil.GatherAndLint(m.Registry(), metrics.Names()...)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	n, err := testutil.GatherAndCount(m.Registry(), metrics.Names()...)
	if err != nil || n < len(metrics.Names()) {
		t.Errorf("linted %d series (err %v), want at least one per name", n, err)
	}
}

func TestNilMetricsDoesNothing(t *testing.T) {
	var m *metrics.Metrics
	m.WebhookReceived("workflow_job", "accepted")
	m.Redelivered(2)
	m.JobQueued("linux")
	m.JobIgnored("no_pool")
	m.JobStarted("linux", time.Second)
	m.JobCompleted("linux", "success", time.Second)
	m.Launch("linux", metrics.ResultOK, time.Second)
	m.RunnerReady("linux", time.Second)
	m.Teardown("linux", "surplus")
	m.ImageBuild("x", metrics.ResultError)
	m.ReconcileAction("x")
	m.ReconcileError()
	m.ReconcileDone(time.Now())
	m.SetStateSource(func() metrics.StateSnapshot { return metrics.StateSnapshot{} })
	if m.Registry() != nil {
		t.Error("Registry() on nil is not nil")
	}
	if !m.LXDLastOK().IsZero() {
		t.Error("LXDLastOK() on nil is not zero")
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("Handler() on nil answered %d, want 404", rec.Code)
	}

	base := roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, nil })
	if rt := metrics.GitHubTransport(base, nil); rt == nil {
		t.Error("GitHubTransport(base, nil) is nil")
	} else if _, wrapped := rt.(roundTripFunc); !wrapped {
		t.Errorf("GitHubTransport(base, nil) = %T, want base itself", rt)
	}
	if rt := metrics.GitHubTransport(nil, nil); rt != http.DefaultTransport {
		t.Errorf("GitHubTransport(nil, nil) = %T, want http.DefaultTransport", rt)
	}
	inner := fleettest.NewInstances()
	if got := metrics.InstrumentInstances(inner, nil); got != inner {
		t.Errorf("InstrumentInstances(inner, nil) = %T, want inner itself", got)
	}
}

// TestConcurrentUse is for -race: recording while scraping.
func TestConcurrentUse(t *testing.T) {
	m := metrics.New("dev")
	m.SetStateSource(func() metrics.StateSnapshot {
		return metrics.StateSnapshot{Jobs: map[[2]string]int{{"linux", "queued"}: 1}}
	})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				touchAll(m)
			}
		}()
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if _, err := m.Registry().Gather(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	want(t, m.Registry(), metrics.JobsQueuedTotal, L{"pool": "linux"}, 800)
}

func TestLeaderMetrics(t *testing.T) {
	m := metrics.New("dev")
	g := m.Registry()
	m.LeaderRole(true)
	m.LeaderChange()
	m.LeaseRenewal("ok")
	m.LeaseRenewal("ok")
	m.LeaseRenewal("lost")
	want(t, g, metrics.LeaderRole, nil, 1)
	want(t, g, metrics.LeaderChangesTotal, nil, 1)
	want(t, g, metrics.LeaseRenewalsTotal, L{"result": "ok"}, 2)
	want(t, g, metrics.LeaseRenewalsTotal, L{"result": "lost"}, 1)
	m.LeaderRole(false)
	want(t, g, metrics.LeaderRole, nil, 0)
}
