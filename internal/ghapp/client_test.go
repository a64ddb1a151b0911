package ghapp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake/ghfaketest"
)

const (
	appID  = 42
	instID = 7
	org    = "acme"
)

type env struct {
	t    *testing.T
	fake *ghfake.Server
	c    *Client
	rec  *ghfaketest.AuthRecorder
	logs *fleettest.LogBuffer
}

func newEnv(t *testing.T, fakeOpts func(*ghfake.Options), cfgMod func(*Config)) *env {
	t.Helper()
	key := ghfaketest.AppKey()
	fo := ghfake.Options{
		AppID: appID, AppPublicKey: &key.PublicKey, WebhookSecret: []byte("s"), Org: org, InstallationID: instID,
		RunnerGroups: map[string]int64{"Default": 1, "lxd-runners": 3},
		Log:          zerolog.New(zerolog.NewTestWriter(t)),
	}
	if fakeOpts != nil {
		fakeOpts(&fo)
	}
	fake, err := ghfake.New(fo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	rec := ghfaketest.NewAuthRecorder()
	cfg := Config{APIURL: fake.URL(), AppID: appID, PrivateKey: ghfaketest.KeyPEM(key), RunnerGroup: "lxd-runners", Transport: rec}
	if cfgMod != nil {
		cfgMod(&cfg)
	}
	logs := &fleettest.LogBuffer{}
	c, err := New(cfg, zerolog.New(logs).Level(zerolog.DebugLevel))
	if err != nil {
		t.Fatal(err)
	}
	c.retry.base = time.Millisecond // keep 5xx retries quick
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("client logs:\n%s", logs.String())
		}
	})
	return &env{t: t, fake: fake, c: c, rec: rec, logs: logs}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func (e *env) jit(name string, labels ...string) fleet.JITRunner {
	e.t.Helper()
	if len(labels) == 0 {
		labels = []string{"self-hosted", "linux"}
	}
	r, err := e.c.GenerateJITConfig(ctx(e.t), fleet.JITRequest{InstallationID: instID, Org: org, Name: name, Labels: labels})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// fault answers matching requests with status and headers, n times.
func (e *env) fault(n int, match func(*http.Request) bool, status int, hdr http.Header) {
	var mu sync.Mutex
	e.fake.SetFault(func(r *http.Request) (int, http.Header, bool) {
		mu.Lock()
		defer mu.Unlock()
		if n == 0 || !match(r) {
			return 0, nil, false
		}
		n--
		return status, hdr, true
	})
}

func path(method, suffix string) func(*http.Request) bool {
	return func(r *http.Request) bool { return r.Method == method && strings.HasSuffix(r.URL.Path, suffix) }
}

func TestValidate(t *testing.T) {
	// The config file's words, never the Go field names.
	goWords := func(t *testing.T, err error) {
		t.Helper()
		for _, f := range []string{"APIURL", "AppID", "PrivateKey", "JITPerMinute", "JITBurst", "Timeout"} {
			if err != nil && strings.Contains(err.Error(), f) {
				t.Errorf("Validate() = %v, names the field %s", err, f)
			}
		}
	}
	err := Config{}.Validate()
	for _, want := range []string{"github.api_url is required", "github.app_id is required", "github.private_key_file is required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(empty) = %v, want mention of %q", err, want)
		}
	}
	goWords(t, err)
	bad := []byte("-----BEGIN RSA PRIVATE KEY-----\nU0VDUkVUU1RVRkY=\n-----END RSA PRIVATE KEY-----\n")
	err = Config{APIURL: "ftp://x", AppID: -2, PrivateKey: bad, Timeout: -1, JITPerMinute: -1, JITBurst: -1}.Validate()
	if err == nil || strings.Contains(err.Error(), "U0VDUkVUU1RVRkY") {
		t.Fatalf("Validate(bad) = %v", err)
	}
	for _, want := range []string{"github.private_key_file: not a PEM", `github.api_url "ftp://x"`, "github.app_id -2: must be positive",
		"github.jit_per_minute must not be negative", "burst", "timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(bad) = %v, want mention of %q", err, want)
		}
	}
	goWords(t, err)
	err = Config{APIURL: "https://x:hunter2@ghe.example.com/", AppID: 1, PrivateKey: ghfaketest.KeyPEM(ghfaketest.AppKey())}.Validate()
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("Validate(url with credentials) = %v", err)
	}
	good := Config{APIURL: "https://api.github.com/", AppID: 1, PrivateKey: ghfaketest.KeyPEM(ghfaketest.AppKey())}
	if s := fmt.Sprintf("%v %+v %#v %s", good, good, good, good); strings.Contains(s, "PRIVATE") || strings.Contains(s, "[45 45") {
		t.Fatalf("config prints its key: %s", s)
	}
	if _, err := New(Config{APIURL: "https://api.github.com/", AppID: 1, PrivateKey: bad}, zerolog.Nop()); err == nil {
		t.Fatal("New with a bad key: no error")
	}
	if err := (Config{APIURL: "https://ghe.example.com/api/v3", AppID: 1, PrivateKey: ghfaketest.KeyPEM(ghfaketest.AppKey())}).Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestJITConfigAndGroupResolution(t *testing.T) {
	e := newEnv(t, nil, nil)
	r1 := e.jit("r1")
	r2 := e.jit("r2", "gpu")
	dec, err := ghfake.DecodeJITConfig(r1.Config.Reveal())
	if err != nil || dec.RunnerID != r1.RunnerID || dec.RunnerName != "r1" {
		t.Fatalf("config %+v %v", dec, err)
	}
	rs := e.fake.Runners()
	if len(rs) != 2 || rs[0].GroupID != 3 || rs[1].ID != r2.RunnerID || strings.Join(rs[1].Labels, ",") != "gpu" {
		t.Fatalf("runners: %+v", rs)
	}
	// One token and one group lookup serve all calls.
	req := e.fake.Requests()
	if req["POST /app/installations/{id}/access_tokens"] != 1 || req["GET /orgs/{org}/actions/runner-groups"] != 1 ||
		req["POST /orgs/{org}/actions/runners/generate-jitconfig"] != 2 {
		t.Fatalf("requests: %v", req)
	}

	_, err = e.c.GenerateJITConfig(ctx(t), fleet.JITRequest{InstallationID: instID, Org: org, Name: "r1", Labels: []string{"x"}})
	if !errors.Is(err, ErrRunnerExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	if got := e.fake.Requests()["POST /orgs/{org}/actions/runners/generate-jitconfig"]; got != 3 {
		t.Fatalf("409 was retried: %d requests", got)
	}
}

// A request that names a group registers there; each group is resolved
// once per org, and a request naming none gets the configured default.
func TestJITConfigInTheRequestsGroup(t *testing.T) {
	e := newEnv(t, nil, nil)
	for i, g := range []string{"Default", "lxd-runners", "Default", ""} {
		name := fmt.Sprintf("r%d-%s", i, g)
		_, err := e.c.GenerateJITConfig(ctx(t), fleet.JITRequest{InstallationID: instID, Org: org, Name: name, Labels: []string{"x"}, RunnerGroup: g})
		if err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]int64{}
	for _, r := range e.fake.Runners() {
		got[r.Name] = r.GroupID
	}
	if got["r0-Default"] != 1 || got["r1-lxd-runners"] != 3 || got["r2-Default"] != 1 || got["r3-"] != 3 {
		t.Fatalf("groups by runner: %v", got)
	}
	if n := e.fake.Requests()["GET /orgs/{org}/actions/runner-groups"]; n != 2 {
		t.Fatalf("%d group lookups, want one per group", n)
	}
}

func TestUnknownRunnerGroup(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.RunnerGroup = "nope" })
	_, err := e.c.GenerateJITConfig(ctx(t), fleet.JITRequest{InstallationID: instID, Org: org, Name: "r", Labels: []string{"x"}})
	if !errors.Is(err, ErrUnknownRunnerGroup) || !strings.Contains(err.Error(), `"nope"`) || !strings.Contains(err.Error(), "lxd-runners") {
		t.Fatalf("unknown group: %v", err)
	}
	if n := e.fake.Requests()["POST /orgs/{org}/actions/runners/generate-jitconfig"]; n != 0 {
		t.Fatalf("jit requested anyway: %d", n)
	}
}

func TestDefaultGroupAndGHESStylePath(t *testing.T) {
	// The URL is used as given (here without its trailing slash): no extra
	// api/v3, as go-github's WithEnterpriseURLs would add.
	e := newEnv(t, func(o *ghfake.Options) { o.PathPrefix = "/api/v3/" }, func(c *Config) {
		c.RunnerGroup = ""
		c.APIURL = strings.TrimSuffix(c.APIURL, "/")
	})
	r := e.jit("r")
	if rs := e.fake.Runners(); len(rs) != 1 || rs[0].GroupID != 1 || rs[0].ID != r.RunnerID {
		t.Fatalf("runners: %+v", rs)
	}
}

func TestRunnerAndRemove(t *testing.T) {
	e := newEnv(t, nil, nil)
	r := e.jit("r1")
	st, err := e.c.Runner(ctx(t), instID, org, r.RunnerID)
	if err != nil || st.ID != r.RunnerID || st.Name != "r1" || st.Online || st.Busy {
		t.Fatalf("runner: %+v %v", st, err)
	}
	if err := e.c.RemoveRunner(ctx(t), instID, org, r.RunnerID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Runner(ctx(t), instID, org, r.RunnerID); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("runner after removal: %v", err)
	}
	if err := e.c.RemoveRunner(ctx(t), instID, org, r.RunnerID); err != nil {
		t.Fatalf("removing a removed runner: %v", err)
	}
	// 404s are answers, not failures: not retried.
	req := e.fake.Requests()
	if req["GET /orgs/{org}/actions/runners/{id}"] != 2 || req["DELETE /orgs/{org}/actions/runners/{id}"] != 2 {
		t.Fatalf("requests: %v", req)
	}
}

func TestRemoveBusyRunner(t *testing.T) {
	e := newEnv(t, nil, nil)
	r := e.jit("busy")
	job := e.fake.QueueJob(ghfake.JobSpec{Labels: []string{"linux"}, Duration: time.Hour})
	sock := ghfaketest.DevLXD(t, r.Config.Reveal())
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ghfake.RunRunner(rctx, ghfake.RunnerOptions{DevLXDSocket: sock}) }()
	defer func() { cancel(); <-done }()
	if _, err := e.fake.WaitJob(ctx(t), job, func(j ghfake.JobView) bool { return j.Status == ghfake.StatusInProgress }); err != nil {
		t.Fatal(err)
	}
	st, err := e.c.Runner(ctx(t), instID, org, r.RunnerID)
	if err != nil || !st.Online || !st.Busy {
		t.Fatalf("runner: %+v %v", st, err)
	}
	if err := e.c.RemoveRunner(ctx(t), instID, org, r.RunnerID); !errors.Is(err, ErrRunnerBusy) {
		t.Fatalf("remove busy: %v", err)
	}
	if err := e.fake.CancelJob(job); err != nil {
		t.Fatal(err)
	}
}

func TestListRunnersPages(t *testing.T) {
	e := newEnv(t, nil, nil)
	e.c.pageSize = 2
	for i := range 5 {
		e.jit(fmt.Sprintf("r%d", i))
	}
	rs, err := e.c.ListRunners(ctx(t), instID, org)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
	}
	if strings.Join(names, ",") != "r0,r1,r2,r3,r4" {
		t.Fatalf("runners: %v", names)
	}
	if n := e.fake.Requests()["GET /orgs/{org}/actions/runners"]; n != 3 {
		t.Fatalf("%d list requests, want 3", n)
	}
}

func TestServerErrorsRetriedWhenSafe(t *testing.T) {
	e := newEnv(t, nil, nil)
	r := e.jit("r1")

	// A 500 window on an idempotent call: retried until it passes.
	e.fault(2, path("GET", "/runners/"+strconv.FormatInt(r.RunnerID, 10)), 500, nil)
	if _, err := e.c.Runner(ctx(t), instID, org, r.RunnerID); err != nil {
		t.Fatal(err)
	}
	if n := e.fake.Requests()["GET /orgs/{org}/actions/runners/{id}"]; n != 3 {
		t.Fatalf("%d get requests, want 3", n)
	}

	// Never-ending 503: bounded attempts.
	e.fault(-1, path("DELETE", ""), 503, nil)
	if err := e.c.RemoveRunner(ctx(t), instID, org, r.RunnerID); err == nil || statusOf(err) != 503 {
		t.Fatalf("remove under 503: %v", err)
	}
	if n := e.fake.Requests()["DELETE /orgs/{org}/actions/runners/{id}"]; n != defaultRetryPolicy.attempts {
		t.Fatalf("%d delete requests, want %d", n, defaultRetryPolicy.attempts)
	}

	// The JIT POST is not retried on 5xx: GitHub may have created it.
	e.fault(1, path("POST", "/generate-jitconfig"), 500, nil)
	if _, err := e.c.GenerateJITConfig(ctx(t), fleet.JITRequest{InstallationID: instID, Org: org, Name: "r2", Labels: []string{"x"}}); statusOf(err) != 500 {
		t.Fatalf("jit under 500: %v", err)
	}
	if n := e.fake.Requests()["POST /orgs/{org}/actions/runners/generate-jitconfig"]; n != 2 {
		t.Fatalf("%d jit requests, want 2", n)
	}

	// But a failed token refresh means the POST never left: retried.
	e2 := newEnv(t, nil, nil)
	e2.fault(1, path("POST", "/access_tokens"), 502, nil)
	e2.jit("r1")
	req := e2.fake.Requests()
	if req["POST /app/installations/{id}/access_tokens"] != 2 || req["POST /orgs/{org}/actions/runners/generate-jitconfig"] != 1 {
		t.Fatalf("requests: %v", req)
	}
}

func TestRejectedTokenRenewedOnce(t *testing.T) {
	e := newEnv(t, nil, nil)
	r := e.jit("r1")
	e.fault(1, path("GET", "/runners/"+strconv.FormatInt(r.RunnerID, 10)), 401, nil)
	if _, err := e.c.Runner(ctx(t), instID, org, r.RunnerID); err != nil {
		t.Fatal(err)
	}
	if n := e.fake.Requests()["POST /app/installations/{id}/access_tokens"]; n != 2 {
		t.Fatalf("%d token requests, want 2", n)
	}
	e.fault(-1, path("GET", "/runners/"+strconv.FormatInt(r.RunnerID, 10)), 401, nil)
	if _, err := e.c.Runner(ctx(t), instID, org, r.RunnerID); statusOf(err) != 401 {
		t.Fatalf("persistent 401: %v", err)
	}
	if n := e.fake.Requests()["GET /orgs/{org}/actions/runners/{id}"]; n != 4 { // 401, ok; 401, 401 with a new token
		t.Fatalf("%d get requests, want 4", n)
	}
}

func TestRateLimits(t *testing.T) {
	t.Run("short Retry-After is waited out, even for the POST", func(t *testing.T) {
		e := newEnv(t, nil, nil)
		e.jit("warm-up") // token and group resolved
		e.fault(1, path("POST", "/generate-jitconfig"), 429, http.Header{"Retry-After": {"1"}})
		start := time.Now()
		e.jit("after-429")
		if time.Since(start) < 900*time.Millisecond {
			t.Fatalf("Retry-After not honoured: retried after %v", time.Since(start))
		}
		if n := e.fake.Requests()["POST /orgs/{org}/actions/runners/generate-jitconfig"]; n != 3 {
			t.Fatalf("%d jit requests, want 3", n)
		}
	})

	t.Run("long secondary limit is returned with when to retry", func(t *testing.T) {
		e := newEnv(t, nil, nil)
		e.fault(-1, path("GET", "/actions/runners"), 403, http.Header{"Retry-After": {"3600"}})
		for range 2 {
			_, err := e.c.ListRunners(ctx(t), instID, org)
			var rl *RateLimitError
			if !errors.As(err, &rl) || time.Until(rl.RetryAt) < 59*time.Minute {
				t.Fatalf("long secondary limit: %v", err)
			}
		}
		// The second call did not even reach GitHub: go-github remembers.
		if n := e.fake.Requests()["GET /orgs/{org}/actions/runners"]; n != 1 {
			t.Fatalf("%d list requests, want 1", n)
		}
	})

	t.Run("exhausted primary limit until a far reset", func(t *testing.T) {
		e := newEnv(t, nil, nil)
		reset := time.Now().Add(30 * time.Minute).Unix()
		e.fault(-1, path("GET", "/runners/1"), 403, http.Header{
			"X-RateLimit-Remaining": {"0"}, "X-RateLimit-Reset": {strconv.FormatInt(reset, 10)},
		})
		for range 2 {
			_, err := e.c.Runner(ctx(t), instID, org, 1)
			var rl *RateLimitError
			if !errors.As(err, &rl) || rl.RetryAt.Unix() != reset {
				t.Fatalf("primary limit: %v", err)
			}
		}
		if n := e.fake.Requests()["GET /orgs/{org}/actions/runners/{id}"]; n != 1 {
			t.Fatalf("%d get requests under a primary limit, want 1", n)
		}
	})

	t.Run("a wait beyond the caller's deadline is not attempted", func(t *testing.T) {
		e := newEnv(t, nil, nil)
		e.fault(-1, path("DELETE", ""), 429, http.Header{"Retry-After": {"5"}})
		short, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var rl *RateLimitError
		if err := e.c.RemoveRunner(short, instID, org, 5); !errors.As(err, &rl) {
			t.Fatalf("429 beyond deadline: %v", err)
		}
		if short.Err() != nil {
			t.Fatal("waited past the deadline")
		}
		if n := e.fake.Requests()["DELETE /orgs/{org}/actions/runners/{id}"]; n != 1 {
			t.Fatalf("%d delete requests, want 1", n)
		}
	})
}

func TestDeliveries(t *testing.T) {
	e := newEnv(t, nil, nil) // no webhook URL: deliveries fail
	e.c.pageSize = 2
	for range 3 {
		e.fake.QueueJob(ghfake.JobSpec{})
	}
	if err := e.fake.WaitDeliveries(ctx(t), func(ds []ghfake.DeliveryView) bool { return len(ds) == 3 }); err != nil {
		t.Fatal(err)
	}
	ds, err := e.c.AppDeliveries(ctx(t), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 3 || !ds[0].Failed() || ds[0].Event != "workflow_job" || ds[0].Action != "queued" || ds[0].InstallationID != instID ||
		ds[0].ID < ds[1].ID || ds[0].GUID == "" || ds[0].DeliveredAt.IsZero() {
		t.Fatalf("deliveries: %+v", ds)
	}
	if n := e.fake.Requests()["GET /app/hook/deliveries"]; n != 2 {
		t.Fatalf("%d list requests, want 2", n)
	}
	recent, err := e.c.AppDeliveries(ctx(t), time.Now().Add(time.Hour))
	if err != nil || len(recent) != 0 {
		t.Fatalf("since the future: %v %v", recent, err)
	}

	if err := e.c.Redeliver(ctx(t), ds[2].ID); err != nil {
		t.Fatal(err)
	}
	if err := e.fake.WaitDeliveries(ctx(t), func(ds []ghfake.DeliveryView) bool { return len(ds) == 4 }); err != nil {
		t.Fatal(err)
	}
	if got := e.fake.Deliveries()[3]; !got.Redelivery || got.GUID != ds[2].GUID {
		t.Fatalf("redelivery: %+v", got)
	}
	if err := e.c.Redeliver(ctx(t), 1); statusOf(err) != 404 {
		t.Fatalf("redeliver unknown: %v", err)
	}
}

// No token, JWT, private key or JIT config may appear in errors or logs.
func TestRedaction(t *testing.T) {
	e := newEnv(t, nil, nil)
	r := e.jit("r1")
	var errs []error
	collect := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	_, err := e.c.GenerateJITConfig(ctx(t), fleet.JITRequest{InstallationID: instID, Org: org, Name: "r1", Labels: []string{"x"}})
	collect(err)
	e.fault(-1, func(*http.Request) bool { return true }, 500, nil)
	_, err = e.c.Runner(ctx(t), instID, org, r.RunnerID)
	collect(err)
	_, err = e.c.GenerateJITConfig(ctx(t), fleet.JITRequest{InstallationID: instID, Org: org, Name: "r2", Labels: []string{"x"}})
	collect(err)
	_, err = e.c.AppDeliveries(ctx(t), time.Time{})
	collect(err)
	e.fault(-1, func(*http.Request) bool { return true }, 401, nil)
	collect(e.c.RemoveRunner(ctx(t), instID, org, r.RunnerID))
	_, err = e.c.GenerateJITConfig(ctx(t), fleet.JITRequest{InstallationID: 99, Org: org, Name: "r3", Labels: []string{"x"}})
	collect(err)
	if len(errs) != 6 {
		t.Fatalf("want 6 errors, got %v", errs)
	}

	dec, err := ghfake.DecodeJITConfig(r.Config.Reveal())
	if err != nil {
		t.Fatal(err)
	}
	pemText := string(ghfaketest.KeyPEM(ghfaketest.AppKey()))
	pemBody := strings.Split(pemText, "\n")[3] // a line of key material
	secrets := append(e.rec.Secrets(), r.Config.Reveal(), dec.Secret.Reveal(), pemBody)
	if len(secrets) < 5 {
		t.Fatalf("recorded too few credentials: %d", len(secrets))
	}
	var text strings.Builder
	for _, err := range errs {
		fmt.Fprintf(&text, "%v\n%+v\n%#v\n", err, err, err)
	}
	fmt.Fprintf(&text, "%v %+v %#v\n", r, r, r)
	text.WriteString(e.logs.String())
	for _, s := range secrets {
		if s != "" && strings.Contains(text.String(), s) {
			t.Fatalf("a credential leaked into errors or logs: %.12s...", s)
		}
	}
}

// A burst of launches stays within the JIT write budget: past the burst,
// requests wait for tokens instead of reaching GitHub.
func TestJITRateLimiter(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.JITPerMinute, c.JITBurst = 1, 3 })
	for i := 0; i < 3; i++ {
		e.jit(fmt.Sprintf("burst-%d", i), "self-hosted")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := e.c.GenerateJITConfig(ctx, fleet.JITRequest{InstallationID: instID, Org: org, Name: "over-budget", Labels: []string{"x"}})
	if err == nil {
		t.Fatal("a fourth JIT config within the minute was not held back")
	}
	if n := e.fake.Requests()["POST /orgs/{org}/actions/runners/generate-jitconfig"]; n != 3 {
		t.Fatalf("JIT requests that reached GitHub = %d, want 3", n)
	}
}

// A request under a refused permit (a leader whose lease may have lapsed)
// is not sent, token requests included, and not retried; a cleanup on a
// context without cancellation keeps the permit.
func TestPermitRefusedSendsNothing(t *testing.T) {
	e := newEnv(t, nil, nil)
	r := e.jit("r1")
	before := e.fake.Requests()
	refused := fleet.WithPermit(ctx(t), func() error { return fleet.ErrNotLeader })
	if err := e.c.RemoveRunner(context.WithoutCancel(refused), instID, org, r.RunnerID); !errors.Is(err, fleet.ErrNotLeader) {
		t.Fatalf("remove under a refused permit: %v, want ErrNotLeader", err)
	}
	e.c.forget(instID) // the next call would need a token first
	if _, err := e.c.GenerateJITConfig(refused, fleet.JITRequest{InstallationID: instID, Org: org, Name: "r2",
		Labels: []string{"self-hosted"}}); !errors.Is(err, fleet.ErrNotLeader) {
		t.Fatalf("JIT config under a refused permit: %v, want ErrNotLeader", err)
	}
	if after := e.fake.Requests(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("requests reached GitHub: before %v, after %v", before, after)
	}
}
