package redeliver

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghapp"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake/ghfaketest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store"
)

var _ Seen = (*store.Store)(nil)

const (
	appID  = 42
	instID = 7
	org    = "acme"

	listRoute      = "GET /app/hook/deliveries"
	redeliverRoute = "POST /app/hook/deliveries/{id}/attempts"
)

var webhookSecret = []byte("webhook-secret")

// logLines returns the JSON log lines with the given message.
func logLines(t *testing.T, s *fleettest.LogBuffer, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// receiver plays the service's webhook endpoint: it verifies the signature
// and records workflow_job deliveries in the store before answering 202.
// Jobs named "flaky" are answered 500 without being recorded; jobs named
// "late" are recorded, then answered 500 (as if the answer came too late).
type receiver struct {
	t  *testing.T
	st *store.Store

	mu   sync.Mutex
	got  []string // GUIDs answered 2xx, in arrival order
	seen int      // requests received
}

type payload struct {
	Action      string `json:"action"`
	WorkflowJob struct {
		ID     int64    `json:"id"`
		RunID  int64    `json:"run_id"`
		Name   string   `json:"name"`
		Labels []string `json:"labels"`
	} `json:"workflow_job"`
	Repository struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
	Organization struct {
		Login string `json:"login"`
	} `json:"organization"`
	Installation struct {
		ID int64 `json:"id"`
	} `json:"installation"`
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	rc.seen++
	rc.mu.Unlock()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	m := hmac.New(sha256.New, webhookSecret)
	m.Write(body)
	want := "sha256=" + hex.EncodeToString(m.Sum(nil))
	if !hmac.Equal([]byte(r.Header.Get("X-Hub-Signature-256")), []byte(want)) {
		rc.t.Errorf("webhook with a bad signature")
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	guid := r.Header.Get("X-GitHub-Delivery")
	if r.Header.Get("X-GitHub-Event") != "workflow_job" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		http.Error(w, "bad payload", http.StatusBadRequest)
		return
	}
	if p.WorkflowJob.Name == "flaky" {
		http.Error(w, "boom", http.StatusInternalServerError)
		return
	}
	_, err = rc.st.Record(r.Context(), fleet.Delivery{
		DeliveryID: guid, Action: fleet.Action(p.Action), JobID: p.WorkflowJob.ID, RunID: p.WorkflowJob.RunID,
		InstallationID: p.Installation.ID, Org: p.Organization.Login, Repo: p.Repository.FullName,
		Labels: p.WorkflowJob.Labels, ReceivedAt: time.Now(),
	})
	if err != nil {
		http.Error(w, "cannot record delivery", http.StatusServiceUnavailable)
		return
	}
	if p.WorkflowJob.Name == "late" {
		http.Error(w, "too late", http.StatusInternalServerError)
		return
	}
	rc.mu.Lock()
	rc.got = append(rc.got, guid)
	rc.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

func (rc *receiver) accepted() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]string(nil), rc.got...)
}

type env struct {
	t     *testing.T
	fake  *ghfake.Server
	gh    *ghapp.Client
	st    *store.Store
	rcv   *receiver
	r     *Redeliverer
	logs  *fleettest.LogBuffer
	auths *ghfaketest.AuthRecorder
	// The stand-in stamps deliveries by the wall clock: the fake one
	// starts there and moves only when the test says.
	clock *fleettest.Clock
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	e := &env{t: t, clock: fleettest.NewClock(time.Now()), logs: &fleettest.LogBuffer{}}
	st, err := store.Open(context.Background(), t.TempDir(), store.Options{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.st = st
	e.rcv = &receiver{t: t, st: st}
	hook := httptest.NewServer(e.rcv)
	t.Cleanup(hook.Close)

	key := ghfaketest.AppKey()
	fake, err := ghfake.New(ghfake.Options{
		AppID: appID, AppPublicKey: &key.PublicKey, WebhookSecret: webhookSecret, WebhookURL: hook.URL,
		Org: org, InstallationID: instID, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close) // before the receiver closes: cleanups run last-in first-out
	e.fake = fake

	e.auths = ghfaketest.NewAuthRecorder()
	e.gh, err = ghapp.New(ghapp.Config{
		APIURL: fake.URL(), AppID: appID, Transport: e.auths,
		PrivateKey: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
	}, zerolog.New(e.logs))
	if err != nil {
		t.Fatal(err)
	}
	e.r, err = New(cfg, e.gh, st, e.clock, zerolog.New(e.logs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", e.logs.String())
		}
	})
	return e
}

func (e *env) advance(d time.Duration) { e.clock.Advance(d) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) round() Result {
	e.t.Helper()
	res, err := e.r.Round(testCtx(e.t))
	if err != nil {
		e.t.Fatalf("round: %v", err)
	}
	return res
}

func (e *env) queue(name string, n int) []int64 {
	var ids []int64
	for range n {
		ids = append(ids, e.fake.QueueJob(ghfake.JobSpec{Name: name}))
	}
	return ids
}

// waitDeliveries waits until the stand-in has attempted n deliveries
// matching f.
func (e *env) waitDeliveries(n int, f func(ghfake.DeliveryView) bool) []ghfake.DeliveryView {
	e.t.Helper()
	var got []ghfake.DeliveryView
	err := e.fake.WaitDeliveries(testCtx(e.t), func(ds []ghfake.DeliveryView) bool {
		got = got[:0]
		for _, d := range ds {
			if f(d) {
				got = append(got, d)
			}
		}
		return len(got) >= n
	})
	if err != nil {
		e.t.Fatalf("waiting for %d deliveries: %v (have %+v)", n, err, got)
	}
	if len(got) != n {
		e.t.Fatalf("%d deliveries, want %d: %+v", len(got), n, got)
	}
	return got
}

func (e *env) requests(route string) int { return e.fake.Requests()[route] }

func dropQueued(event, action string, _ int64) bool {
	return event == "workflow_job" && action == "queued"
}

func original(d ghfake.DeliveryView) bool    { return !d.Redelivery }
func redelivered(d ghfake.DeliveryView) bool { return d.Redelivery && !d.Failed }

func guids(ds []ghfake.DeliveryView) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.GUID)
	}
	slices.Sort(out)
	return out
}

func jobIDs(ds []ghfake.DeliveryView) []int64 {
	var out []int64
	for _, d := range ds {
		out = append(out, d.JobID)
	}
	slices.Sort(out)
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestRecoversDroppedDeliveries(t *testing.T) {
	e := newEnv(t, Config{})
	e.fake.DropWebhooks(dropQueued)
	e.queue("build", 3)
	lost := e.waitDeliveries(3, func(d ghfake.DeliveryView) bool { return d.Dropped })

	res := e.round()
	if want := (Result{Listed: 3, Failed: 3, Redelivered: 3}); res != want {
		t.Fatalf("round = %+v, want %+v", res, want)
	}
	if n := e.requests(redeliverRoute); n != 3 {
		t.Fatalf("%d redelivery requests, want 3", n)
	}

	// They arrive with their original GUIDs and are recorded.
	back := e.waitDeliveries(3, redelivered)
	if !slices.Equal(guids(back), guids(lost)) {
		t.Fatalf("redelivered %v, want %v", guids(back), guids(lost))
	}
	if got := sorted(e.rcv.accepted()); !slices.Equal(got, guids(lost)) {
		t.Fatalf("receiver accepted %v, want %v", got, guids(lost))
	}
	seen, err := e.st.SeenDeliveries(testCtx(t), guids(lost))
	if err != nil || len(seen) != 3 {
		t.Fatalf("seen = %v, %v", seen, err)
	}

	// One log line per redelivery, naming the GUID, action and numeric id.
	ids := map[string]int64{}
	for _, d := range lost {
		ids[d.GUID] = d.ID
	}
	lines := logLines(t, e.logs, "asked github to redeliver a missed webhook")
	if len(lines) != 3 {
		t.Fatalf("%d redelivery log lines, want 3", len(lines))
	}
	for _, l := range lines {
		guid, _ := l["delivery_guid"].(string)
		id, _ := l["delivery_id"].(float64)
		if ids[guid] == 0 || int64(id) != ids[guid] || l["action"] != "queued" {
			t.Errorf("log line %v: want a lost GUID with its delivery id and action", l)
		}
	}

	// Well past any spacing: nothing is left to redeliver.
	e.advance(time.Hour)
	res = e.round()
	if want := (Result{Listed: 6}); res != want {
		t.Fatalf("second round = %+v, want %+v", res, want)
	}
	if n := e.requests(redeliverRoute); n != 3 {
		t.Fatalf("%d redelivery requests after the second round, want 3", n)
	}

	logs := e.logs.String()
	auths := e.auths.Secrets()
	if len(auths) == 0 {
		t.Fatal("no credentials recorded")
	}
	for _, a := range auths {
		if strings.Contains(logs, a) {
			t.Fatal("a credential appears in the logs")
		}
	}
}

func TestSkipsFailedButSeen(t *testing.T) {
	e := newEnv(t, Config{})
	e.queue("late", 1)
	d := e.waitDeliveries(1, original)[0]
	if !d.Failed || d.StatusCode != http.StatusInternalServerError {
		t.Fatalf("delivery %+v: want a failed one", d)
	}
	res := e.round()
	if want := (Result{Listed: 1, Failed: 1, SkippedSeen: 1}); res != want {
		t.Fatalf("round = %+v, want %+v", res, want)
	}
	if n := e.requests(redeliverRoute); n != 0 {
		t.Fatalf("%d redelivery requests, want 0", n)
	}
}

// GitHub's ping when the App is made fails (the service cannot run before
// the App exists): it is redelivered, once, so that it becomes the first
// webhook the service records. Nothing but its attempts tells it arrived.
func TestRedeliversAFailedPing(t *testing.T) {
	e := newEnv(t, Config{})
	e.fake.DropWebhooks(func(event, _ string, _ int64) bool { return event != "workflow_job" })
	e.fake.Ping()
	e.queue("build", 1)
	ds := e.waitDeliveries(2, original)
	if ds[0].Event != "ping" || !ds[0].Failed || ds[1].Failed {
		t.Fatalf("deliveries %+v: want a failed ping and a delivered job", ds)
	}
	res := e.round()
	if want := (Result{Listed: 2, Failed: 1, Redelivered: 1}); res != want {
		t.Fatalf("round = %+v, want %+v", res, want)
	}
	ds = e.waitDeliveries(3, func(ghfake.DeliveryView) bool { return true })
	if last := ds[2]; last.Event != "ping" || !last.Redelivery || last.Failed || last.GUID != ds[0].GUID {
		t.Fatalf("redelivery %+v: want the ping, delivered", last)
	}
	e.advance(time.Hour)
	if res := e.round(); res.Redelivered != 0 || res.Failed != 0 {
		t.Fatalf("a ping that arrived is redelivered again: %+v", res)
	}
	if n := e.requests(redeliverRoute); n != 1 {
		t.Fatalf("%d redelivery requests, want 1", n)
	}
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	e := newEnv(t, Config{})
	e.queue("flaky", 1)
	guid := e.waitDeliveries(1, original)[0].GUID
	byGUID := func(d ghfake.DeliveryView) bool { return d.GUID == guid }

	for i := 1; i <= MaxAttempts; i++ {
		if res := e.round(); res.Redelivered != 1 || res.Failed != 1 {
			t.Fatalf("attempt %d: round = %+v", i, res)
		}
		e.waitDeliveries(i+1, byGUID)
		// Asked recently: wait, do not ask again.
		if res := e.round(); res.Redelivered != 0 || res.Waiting != 1 {
			t.Fatalf("after attempt %d: round = %+v, want waiting", i, res)
		}
		e.advance(e.r.spacing(i))
	}
	res := e.round()
	if want := (Result{Listed: 4, Failed: 1, GaveUp: 1}); res != want {
		t.Fatalf("round = %+v, want %+v", res, want)
	}
	e.advance(time.Hour)
	res = e.round()
	if want := (Result{Listed: 4, Failed: 1}); res != want {
		t.Fatalf("round after giving up = %+v, want %+v", res, want)
	}
	if n := e.requests(redeliverRoute); n != MaxAttempts {
		t.Fatalf("%d redelivery requests, want %d", n, MaxAttempts)
	}
	lines := logLines(t, e.logs, "webhook still not delivered after redeliveries; giving up: its job may need a re-run")
	if len(lines) != 1 || lines[0]["delivery_guid"] != guid || lines[0]["level"] != "error" {
		t.Fatalf("give-up log lines: %v", lines)
	}

	// A restarted service counts the redeliveries GitHub lists.
	fresh, err := New(Config{}, e.gh, e.st, e.clock, zerolog.New(e.logs))
	if err != nil {
		t.Fatal(err)
	}
	res, err = fresh.Round(testCtx(t))
	if err != nil || res.GaveUp != 1 || res.Redelivered != 0 {
		t.Fatalf("after a restart: round = %+v, %v", res, err)
	}
	if n := e.requests(redeliverRoute); n != MaxAttempts {
		t.Fatalf("%d redelivery requests after a restart, want %d", n, MaxAttempts)
	}
}

// rateLimit answers 429 with an hour's Retry-After to the requests whose
// method and path end match.
func rateLimit(method, pathEnd string) func(*http.Request) (int, http.Header, bool) {
	return func(r *http.Request) (int, http.Header, bool) {
		if r.Method == method && strings.HasSuffix(r.URL.Path, pathEnd) {
			return http.StatusTooManyRequests, http.Header{"Retry-After": {"3600"}}, true
		}
		return 0, nil, false
	}
}

func TestRateLimitedListBacksOff(t *testing.T) {
	e := newEnv(t, Config{})
	e.fake.SetFault(rateLimit(http.MethodGet, "/app/hook/deliveries"))

	_, err := e.r.Round(testCtx(t))
	var rl *ghapp.RateLimitError
	if !errors.As(err, &rl) || time.Until(rl.RetryAt) < 50*time.Minute {
		t.Fatalf("round error %v: want a rate-limit error an hour out", err)
	}
	if n := e.requests(listRoute); n != 1 {
		t.Fatalf("%d list requests, want 1 (no retries in place)", n)
	}

	// Run waits for GitHub's reset between rounds rather than its interval.
	waits := runRounds(t, e, 3)
	for i, w := range waits {
		if w < 50*time.Minute {
			t.Errorf("wait %d after a rate limit: %s", i, w)
		}
	}
	if n := e.requests(listRoute); n != 1+3 {
		t.Fatalf("%d list requests, want one per round (4)", n)
	}
}

func TestRunBacksOffOnErrors(t *testing.T) {
	e := newEnv(t, Config{})
	var mu sync.Mutex
	fails := 3
	e.fake.SetFault(func(r *http.Request) (int, http.Header, bool) {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			return http.StatusNotFound, nil, true
		}
		return 0, nil, false
	})
	waits := runRounds(t, e, 5)
	i := DefaultInterval
	if want := []time.Duration{2 * i, 4 * i, 8 * i, i, i}; !slices.Equal(waits, want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	if n := e.requests(listRoute); n != 5 {
		t.Fatalf("%d list requests, want 5", n)
	}
}

// runRounds runs e.r.Run for n rounds, moving the clock past each wait, and
// returns the waits it asked for.
func runRounds(t *testing.T, e *env, n int) []time.Duration {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.r.Run(ctx) }()
	var waits []time.Duration
	for range n {
		if err := e.clock.WaitTimers(ctx, 1); err != nil {
			t.Fatalf("Run does not wait between rounds: %v", err)
		}
		d, _ := e.clock.NextTimer()
		waits = append(waits, d)
		e.clock.Advance(d)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	return waits
}

func TestRateLimitedRedeliveryDefers(t *testing.T) {
	e := newEnv(t, Config{})
	e.fake.DropWebhooks(dropQueued)
	e.queue("build", 2)
	e.waitDeliveries(2, original)
	e.fake.SetFault(rateLimit(http.MethodPost, "/attempts"))

	res, err := e.r.Round(testCtx(t))
	var rl *ghapp.RateLimitError
	if !errors.As(err, &rl) {
		t.Fatalf("round error %v: want a rate-limit error", err)
	}
	if want := (Result{Listed: 2, Failed: 2, Deferred: 2}); res != want {
		t.Fatalf("round = %+v, want %+v", res, want)
	}
	if n := e.requests(redeliverRoute); n != 1 {
		t.Fatalf("%d redelivery requests, want 1: stop at the first rate limit", n)
	}

	// A refused request is not an attempt: no spacing to wait out.
	e.fake.SetFault(nil)
	if res := e.round(); res.Redelivered != 2 {
		t.Fatalf("round after the limit = %+v", res)
	}
	e.waitDeliveries(2, redelivered)
}

func TestMaxPerRoundOldestFirst(t *testing.T) {
	e := newEnv(t, Config{MaxPerRound: 2})
	e.fake.DropWebhooks(dropQueued)
	jobs := e.queue("build", 5)
	e.waitDeliveries(5, original)

	for i, want := range []Result{
		{Listed: 5, Failed: 5, Redelivered: 2, Deferred: 3},
		{Listed: 7, Failed: 3, Redelivered: 2, Deferred: 1},
		{Listed: 9, Failed: 1, Redelivered: 1},
		{Listed: 10},
	} {
		res := e.round()
		if res != want {
			t.Fatalf("round %d = %+v, want %+v", i+1, res, want)
		}
		n := min(2*(i+1), 5)
		if got := jobIDs(e.waitDeliveries(n, redelivered)); !slices.Equal(got, jobs[:n]) {
			t.Fatalf("after round %d: redelivered jobs %v, want %v", i+1, got, jobs[:n])
		}
	}
}

func TestConfig(t *testing.T) {
	c := Config{}.WithDefaults()
	if c.Interval != time.Minute || c.Lookback != 6*time.Hour || c.MaxPerRound != 50 || c.Validate() != nil {
		t.Fatalf("defaults %+v: %v", c, c.Validate())
	}
	if err := (Config{Interval: MinInterval}).WithDefaults().Validate(); err != nil {
		t.Errorf("the shortest interval: %v", err)
	}
	for _, tc := range []struct {
		cfg  Config
		want string // the whole message: one problem, in the config file's words
	}{
		{Config{Interval: -time.Minute}, "redeliver_interval -1m0s: must be between 1s and 24h0m0s"},
		{Config{Interval: 48 * time.Hour}, "redeliver_interval 48h0m0s: must be between 1s and 24h0m0s"},
		{Config{Interval: 12 * time.Hour}, "redeliver_interval 12h0m0s: must not be longer than the redelivery lookback (6h0m0s)"},
		{Config{Interval: time.Hour, Lookback: time.Minute}, "redeliver_interval 1h0m0s: must not be longer than the redelivery lookback (1m0s)"},
		{Config{MaxPerRound: -1}, "redeliver: at most -1 redeliveries a round: want at least 1"},
	} {
		err := tc.cfg.WithDefaults().Validate()
		if err == nil || err.Error() != tc.want {
			t.Errorf("%+v: got %v, want %q", tc.cfg, err, tc.want)
		}
		if _, err := New(tc.cfg, nil, nil, nil, zerolog.Nop()); err == nil {
			t.Errorf("%+v: New: no error", tc.cfg)
		}
	}
	if _, err := New(Config{}, nil, nil, nil, zerolog.Nop()); err == nil {
		t.Error("nil dependencies: no error")
	}
}
