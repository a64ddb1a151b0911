package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin/admintest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

type response struct {
	code int
	hdr  http.Header
	body string
}

func do(t *testing.T, h http.Handler, method, target string, hdr ...string) response {
	t.Helper()
	req := httptest.NewRequest(method, "http://127.0.0.1:9090"+target, nil)
	req.RemoteAddr = "127.0.0.1:40000"
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return response{rec.Code, rec.Header(), rec.Body.String()}
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	return v
}

func wantError(t *testing.T, r response, code int, contains string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("status %d, want %d; body %s", r.code, code, r.body)
	}
	if ct := r.hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	e := decode[map[string]string](t, r)
	if len(e) != 1 || !strings.Contains(e["error"], contains) {
		t.Errorf("error body %s, want {\"error\": ...%s...}", r.body, contains)
	}
}

func newHandler(b admin.Backend) http.Handler {
	return admin.NewHandler(b, admin.Options{Log: zerolog.Nop()})
}

func TestStatus(t *testing.T) {
	h := newHandler(admintest.New())
	r := do(t, h, "GET", "/api/status")
	if r.code != 200 || r.hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d %q: %s", r.code, r.hdr.Get("Content-Type"), r.body)
	}
	st := decode[admin.Status](t, r)
	if len(st.Pools) != 2 || st.Pools[0].Name != "linux" || st.Pools[0].Max != 10 || !st.Pools[1].Draining {
		t.Errorf("pools %+v", st.Pools)
	}
	if len(st.Jobs) != 4 || st.Jobs[3].Wait != 10*time.Second || st.Jobs[3].Run != time.Minute || !st.Ready {
		t.Errorf("jobs %+v ready %v", st.Jobs, st.Ready)
	}
	// The JSON shape clients (and jq users) see: snake_case, durations in
	// ns, unknown times and durations left out, empty lists as [].
	raw := decode[map[string]any](t, r)
	for _, k := range []string{"pools", "jobs", "ready", "checks"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("status JSON lacks %q: %s", k, r.body)
		}
	}
	pool := raw["pools"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "queued", "launching", "idle", "busy", "max", "draining"} {
		if _, ok := pool[k]; !ok {
			t.Errorf("pool JSON lacks %q", k)
		}
	}
	done := raw["jobs"].([]any)[3].(map[string]any)
	if done["wait_ns"] != float64(10e9) || done["queued_at"] != "2025-03-14T09:26:53Z" || done["runner"] != "gha-linux-4aeb8f23" {
		t.Errorf("job JSON %v", done)
	}
	ignored := raw["jobs"].([]any)[0].(map[string]any)
	if _, ok := ignored["wait_ns"]; ok {
		t.Errorf("unknown wait present: %v", ignored)
	}
	if _, ok := ignored["started_at"]; ok {
		t.Errorf("zero started_at present: %v", ignored)
	}

	empty := &admintest.Backend{StatusFunc: func(context.Context) (admin.Status, error) { return admin.Status{}, nil }}
	r = do(t, newHandler(empty), "GET", "/api/status")
	if !strings.Contains(r.body, `"pools": []`) || !strings.Contains(r.body, `"jobs": []`) || !strings.Contains(r.body, `"checks": {}`) {
		t.Errorf("empty status: %s", r.body)
	}
}

func TestJobs(t *testing.T) {
	b := admintest.New()
	h := newHandler(b)
	r := do(t, h, "GET", "/api/jobs?pool=linux&state=completed&limit=5")
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	got := decode[struct{ Jobs []admin.Job }](t, r)
	if len(got.Jobs) != 1 || got.Jobs[0].ID != 1001 {
		t.Errorf("jobs %+v", got.Jobs)
	}
	if calls := b.CallLog(); calls[len(calls)-1] != "Jobs pool=linux state=completed limit=5" {
		t.Errorf("filter passed: %v", calls)
	}
	do(t, h, "GET", "/api/jobs")
	if calls := b.CallLog(); calls[len(calls)-1] != "Jobs pool= state= limit=50" {
		t.Errorf("default limit: %v", calls)
	}
	r = do(t, h, "GET", "/api/jobs?state=nothing")
	if r.code != 200 || !strings.Contains(r.body, `"jobs": []`) {
		t.Errorf("no match: %d %s", r.code, r.body)
	}
	for _, l := range []string{"0", "-1", "x", "1001", "9999999999999999999999"} {
		wantError(t, do(t, h, "GET", "/api/jobs?limit="+l), 400, "limit")
	}
	wantError(t, do(t, h, "GET", "/api/jobs?pool=nope"), 400, `unknown pool "nope"`)
}

func TestJob(t *testing.T) {
	h := newHandler(admintest.New())
	r := do(t, h, "GET", "/api/jobs/1001")
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	d := decode[admin.JobDetail](t, r)
	if d.ID != 1001 || d.Pool != "linux" || len(d.Events) != 8 || d.Events[0].Kind != "queued" {
		t.Errorf("detail %+v", d)
	}
	// JobDetail's Job fields are flattened, not nested.
	raw := decode[map[string]any](t, r)
	if raw["id"] != float64(1001) || raw["events"] == nil {
		t.Errorf("detail JSON %s", r.body)
	}
	r = do(t, h, "GET", "/api/jobs/1004")
	if r.code != 200 || !strings.Contains(r.body, `"events": []`) {
		t.Errorf("no events: %d %s", r.code, r.body)
	}
	wantError(t, do(t, h, "GET", "/api/jobs/42"), 404, "job 42: not found")
	for _, id := range []string{"abc", "0", "-3", "1.5", "99999999999999999999"} {
		wantError(t, do(t, h, "GET", "/api/jobs/"+id), 400, "job id")
	}
}

func TestDrain(t *testing.T) {
	b := admintest.New()
	h := newHandler(b)
	r := do(t, h, "POST", "/api/pools/linux/drain")
	if r.code != 200 || decode[map[string]any](t, r)["draining"] != true {
		t.Fatalf("drain: %d %s", r.code, r.body)
	}
	r = do(t, h, "POST", "/api/pools/gpu/undrain")
	got := decode[map[string]any](t, r)
	if r.code != 200 || got["draining"] != false || got["pool"] != "gpu" {
		t.Fatalf("undrain: %d %s", r.code, r.body)
	}
	wantError(t, do(t, h, "POST", "/api/pools/nope/drain"), 400, "unknown pool")
	wantError(t, do(t, h, "GET", "/api/pools/linux/drain"), 405, "method not allowed")
	want := []string{"SetDrain linux true", "SetDrain gpu false", "SetDrain nope true"}
	if calls := b.CallLog(); strings.Join(calls, "|") != strings.Join(want, "|") {
		t.Errorf("calls %v, want %v", calls, want)
	}
}

func TestDeleteInstance(t *testing.T) {
	b := admintest.New()
	h := newHandler(b)
	r := do(t, h, "DELETE", "/api/instances/gha-linux-2b7c91d0")
	got := decode[map[string]any](t, r)
	if r.code != 200 || got["instance"] != "gha-linux-2b7c91d0" || got["deleted"] != true {
		t.Fatalf("delete: %d %s", r.code, r.body)
	}
	wantError(t, do(t, h, "DELETE", "/api/instances/someone-elses"), 404, "not found")
	// An escaped name reaches the backend unescaped, as one segment.
	wantError(t, do(t, h, "DELETE", "/api/instances/a%2Fb"), 404, "instance a/b")
	if calls := b.CallLog(); calls[len(calls)-1] != "DeleteInstance a/b" {
		t.Errorf("calls %v", calls)
	}
	wantError(t, do(t, h, "POST", "/api/instances/x"), 405, "")
}

func TestBackendFailure(t *testing.T) {
	boom := errors.New("database is locked")
	b := &admintest.Backend{
		StatusFunc: func(context.Context) (admin.Status, error) { return admin.Status{}, boom },
		JobFunc:    func(context.Context, int64) (admin.JobDetail, error) { return admin.JobDetail{}, boom },
		DeleteInstanceFunc: func(context.Context, string) error {
			return errors.Join(errors.New("lxd"), fleet.ErrNotFound)
		},
	}
	h := newHandler(b)
	wantError(t, do(t, h, "GET", "/api/status"), 500, "database is locked")
	wantError(t, do(t, h, "GET", "/api/jobs/7"), 500, "database is locked")
	wantError(t, do(t, h, "DELETE", "/api/instances/x"), 404, "lxd")
	if r := do(t, h, "GET", "/"); r.code != 500 || !strings.Contains(r.body, "database is locked") {
		t.Errorf("page: %d %s", r.code, r.body)
	}
}

func TestUnknownRoute(t *testing.T) {
	h := newHandler(admintest.New())
	wantError(t, do(t, h, "GET", "/api/nope"), 404, "no such route")
	wantError(t, do(t, h, "GET", "/webhook"), 404, "")
}

func TestToken(t *testing.T) {
	b := admintest.New()
	h := admin.NewHandler(b, admin.Options{Token: "s3cret-token", Log: zerolog.Nop()})
	routes := [][2]string{
		{"GET", "/"}, {"GET", "/api/status"}, {"GET", "/api/jobs"}, {"GET", "/api/jobs/1001"},
		{"POST", "/api/pools/linux/drain"}, {"POST", "/api/pools/linux/undrain"},
		{"DELETE", "/api/instances/gha-linux-2b7c91d0"}, {"GET", "/api/nope"},
	}
	bad := map[string][]string{
		"missing":      nil,
		"wrong":        {"Authorization", "Bearer s3cret-tokeN"},
		"prefix":       {"Authorization", "Bearer s3cret"},
		"longer":       {"Authorization", "Bearer s3cret-token2"},
		"empty":        {"Authorization", "Bearer "},
		"basic scheme": {"Authorization", "Basic s3cret-token"},
		"no scheme":    {"Authorization", "s3cret-token"},
	}
	for _, rt := range routes {
		for name, hdr := range bad {
			r := do(t, h, rt[0], rt[1], hdr...)
			if r.code != 401 {
				t.Errorf("%s %s with %s token: %d, want 401", rt[0], rt[1], name, r.code)
				continue
			}
			if !strings.HasPrefix(r.hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: %v", r.hdr)
			}
			wantError(t, r, 401, "token")
		}
	}
	if len(b.CallLog()) != 0 {
		t.Fatalf("backend called without a token: %v", b.CallLog())
	}
	for _, rt := range routes {
		for _, auth := range []string{"Bearer s3cret-token", "bearer s3cret-token"} {
			r := do(t, h, rt[0], rt[1], "Authorization", auth)
			if r.code == 401 {
				t.Errorf("%s %s with the right token: 401", rt[0], rt[1])
			}
		}
	}
}

func TestCrossOriginMutationRefused(t *testing.T) {
	b := admintest.New()
	h := newHandler(b)
	r := do(t, h, "POST", "/api/pools/linux/drain", "Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example")
	if r.code != http.StatusForbidden {
		t.Errorf("cross-site drain: %d %s", r.code, r.body)
	}
	if len(b.CallLog()) != 0 {
		t.Errorf("backend called: %v", b.CallLog())
	}
	// Reading is harmless, and same-origin posts (or CLI posts) pass.
	if r := do(t, h, "GET", "/api/status", "Sec-Fetch-Site", "cross-site"); r.code != 200 {
		t.Errorf("cross-site GET: %d", r.code)
	}
	if r := do(t, h, "POST", "/api/pools/linux/drain", "Sec-Fetch-Site", "same-origin"); r.code != 200 {
		t.Errorf("same-origin POST: %d", r.code)
	}
}

func TestDNSRebindingRefused(t *testing.T) {
	b := admintest.New()
	h := newHandler(b)
	for _, host := range []string{"evil.example:9090", "evil.example", "10.0.0.5:9090", "127.0.0.1.evil.example"} {
		wantError(t, do(t, h, "POST", "/api/pools/linux/drain", "Host", host), 403, "refused")
		wantError(t, do(t, h, "GET", "/api/status", "Host", host), 403, "refused")
	}
	if len(b.CallLog()) != 0 {
		t.Errorf("backend called: %v", b.CallLog())
	}
	for _, host := range []string{"localhost:9090", "LOCALHOST", "127.0.0.1", "[::1]:9090", "127.1.2.3:80"} {
		if r := do(t, h, "GET", "/api/status", "Host", host); r.code != 200 {
			t.Errorf("Host %s: %d", host, r.code)
		}
	}
	// With a token, any Host may ask: the token is what guards it.
	tok := admin.NewHandler(b, admin.Options{Token: "t", Log: zerolog.Nop()})
	if r := do(t, tok, "GET", "/api/status", "Host", "admin.example.org", "Authorization", "Bearer t"); r.code != 200 {
		t.Errorf("token, other host: %d", r.code)
	}
	// A unix socket's peer has no address; its Host is whatever the client says.
	req := httptest.NewRequest("GET", "http://admin/api/status", nil)
	req.RemoteAddr = "@"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Errorf("unix socket peer: %d", rec.Code)
	}
}

func TestPage(t *testing.T) {
	h := newHandler(admintest.New())
	r := do(t, h, "GET", "/")
	if r.code != 200 || !strings.HasPrefix(r.hdr.Get("Content-Type"), "text/html") {
		t.Fatalf("%d %v", r.code, r.hdr)
	}
	for _, want := range []string{
		"<title>lxd-gha-autoscaler</title>",
		`<meta http-equiv="refresh" content="5">`,
		`<p id="ready" class="ok">ready</p>`,
		`<table id="pools">`, `<tr class="pool" id="pool-linux">`, `<td class="n max">10</td>`,
		`<tr class="pool" id="pool-gpu">`, `<td class="draining">draining</td>`,
		`<table id="jobs">`, `<tr class="job" id="job-1001"`, `<tr class="job" id="job-1004"`,
		// 1001: wait 10s, boot 10s, run 60s of 80s.
		`<span class="wait nz" style="width:12.5%" title="wait 10.0s">`,
		`<span class="boot nz" style="width:12.5%" title="boot 10.0s">`,
		`<span class="run nz" style="width:75.0%" title="run 60.0s">`,
		`<span class="total">1m20s</span>`,
		// 1002: still running, no run time yet.
		`<span class="run" style="width:0.0%" title="run 0.0s">`,
		"completed (success)", "no pool matches the job&#39;s labels", "gha-linux-4aeb8f23", "acme/api",
		`<p id="webhook" class="muted" title="2025-03-14T09:29:54Z">last webhook received `, `(<span class="event">workflow_job</span>)</p>`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if n := strings.Count(r.body, `<tr class="job"`); n != 4 {
		t.Errorf("%d job rows, want 4", n)
	}
	if csp := r.hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
}

func TestPageNotReadyAndEscaping(t *testing.T) {
	b := &admintest.Backend{StatusFunc: func(context.Context) (admin.Status, error) {
		return admin.Status{
			Checks: map[string]string{"lxd": "dial unix /var/lib/lxd/unix.socket: connection refused", "store": admin.CheckOK, "github": "<b>401</b>"},
			Jobs:   []admin.Job{{ID: 5, Repo: `"><script>alert(1)</script>`, State: "queued", Pool: "x</td>"}},
		}, nil
	}}
	r := do(t, newHandler(b), "GET", "/")
	if r.code != 200 {
		t.Fatalf("%d", r.code)
	}
	for _, want := range []string{
		`<div id="ready" class="fail">not ready:`,
		"<li>github: &lt;b&gt;401&lt;/b&gt;</li><li>lxd: dial unix /var/lib/lxd/unix.socket: connection refused</li>",
		`no pools`,
		`<p id="webhook" class="warn">no webhook received yet: check the App's webhook URL, the proxy and the webhook secret</p>`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("page lacks %s\n%s", want, r.body)
		}
	}
	if strings.Contains(r.body, "<script>") || strings.Contains(r.body, "store: ok") {
		t.Errorf("page: %s", r.body)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 850 * time.Millisecond: "850ms", 4200 * time.Millisecond: "4.2s", 192 * time.Second: "3m12s",
		2*time.Hour + 5*time.Minute + 10*time.Second: "2h05m", -3 * time.Second: "-3.0s", 76*time.Hour + 10*time.Minute: "3d04h",
	} {
		if got := admin.FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
