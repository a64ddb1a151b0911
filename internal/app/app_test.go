package app_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin/admintest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/app"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/scheduler"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store"
)

// These tests run the whole service in-process: the real state store, the
// webhook handler, the scheduler and the admin API, with the in-memory LXD
// and GitHub and a clock the test drives.

var secret = []byte("It's a Secret to Everybody")

var (
	linuxLabels = []string{"self-hosted", "linux", "x64"}
	gpuLabels   = []string{"self-hosted", "gpu"}
)

func testConfig() app.Config {
	return app.Config{
		WebhookSecret: secret,
		Scheduler: scheduler.Config{
			MaxInstances: 4,
			Pools: []scheduler.Pool{
				{Name: "linux", Labels: linuxLabels, Image: "img", MaxInstances: 3},
				{Name: "gpu", Labels: gpuLabels, Image: "img-gpu", MaxInstances: 1},
			},
		},
		// Loopback TCP needs no token; Run (where a test calls it) listens
		// on a free port.
		AdminListen: "127.0.0.1:0",
	}
}

type env struct {
	t     *testing.T
	app   *app.App
	st    *store.Store
	lxd   *fleettest.Instances
	gh    *fleettest.GitHub
	clock *fleettest.Clock
	logs  *fleettest.LogBuffer
	admin *httptest.Server // serves app.AdminHandler()
}

// newEnv builds the service on a fresh store and fakes; edit may change
// its config and dependencies first.
func newEnv(t *testing.T, edit func(*app.Config, *app.Deps)) *env {
	t.Helper()
	st, err := store.Open(context.Background(), t.TempDir(), store.Options{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{
		t: t, st: st,
		lxd:   fleettest.NewInstances(),
		gh:    fleettest.NewGitHub(),
		clock: fleettest.NewClock(time.Time{}),
		logs:  &fleettest.LogBuffer{},
	}
	cfg := testConfig()
	deps := app.Deps{State: st, Instances: e.lxd, GitHub: e.gh, Clock: e.clock, Log: zerolog.New(e.logs)}
	if edit != nil {
		edit(&cfg, &deps)
	}
	e.app, err = app.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if h := e.app.AdminHandler(); h != nil {
		e.admin = httptest.NewServer(h)
		t.Cleanup(e.admin.Close)
	}
	return e
}

// run runs the service until the test ends, serving webhooks on a
// loopback listener whose base URL it returns.
func (e *env) run() string {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.app.Run(ctx, ln) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			e.t.Error("Run did not return after its context ended")
		}
	})
	return "http://" + ln.Addr().String()
}

// until polls cond until it holds. Each round moves the fake clock to the
// next timer some goroutine sleeps on (the scheduler coalescing a wake-up),
// so the loop steps as it would in real time, and no further.
func (e *env) until(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting until %s", what)
		}
		if d, ok := e.clock.NextTimer(); ok {
			e.clock.Advance(d)
		}
		time.Sleep(time.Millisecond)
	}
}

func (e *env) job(id int64) fleet.Job {
	e.t.Helper()
	return fleettest.Read(e.t, e.st, func(tx fleet.Tx) (fleet.Job, error) { return tx.Job(id) })
}

func (e *env) runner(name string) fleet.Runner {
	e.t.Helper()
	return fleettest.Read(e.t, e.st, func(tx fleet.Tx) (fleet.Runner, error) { return tx.Runner(name) })
}

func (e *env) pending() int {
	e.t.Helper()
	return len(fleettest.Read(e.t, e.st, func(tx fleet.Tx) ([]fleet.Delivery, error) { return tx.PendingDeliveries(100) }))
}

// seed writes jobs, runners and timeline steps straight into the state.
func (e *env) seed(fn func(tx fleet.Tx) error) {
	e.t.Helper()
	if err := e.st.Update(context.Background(), fn); err != nil {
		e.t.Fatal(err)
	}
}

// hook is one workflow_job delivery.
type hook struct {
	id         string // X-GitHub-Delivery
	action     fleet.Action
	job        int64
	labels     []string
	runner     string
	conclusion string
	at         time.Time // the job's timestamps; zero: fleettest.T0
}

func (h hook) body() []byte {
	labels := h.labels
	if labels == nil {
		labels = linuxLabels
	}
	job := map[string]any{"id": h.job, "run_id": 7, "labels": labels, "status": h.action}
	at := h.at
	if at.IsZero() {
		at = fleettest.T0
	}
	job["created_at"] = at.UTC().Format(time.RFC3339)
	if h.action != fleet.ActionQueued {
		job["started_at"] = job["created_at"]
	}
	if h.action == fleet.ActionCompleted {
		job["completed_at"] = job["created_at"]
	}
	if h.runner != "" {
		job["runner_name"] = h.runner
	}
	if h.conclusion != "" {
		job["conclusion"] = h.conclusion
	}
	b, err := json.Marshal(map[string]any{
		"action":       h.action,
		"workflow_job": job,
		"repository":   map[string]any{"full_name": "acme/app", "private": true, "visibility": "private"},
		"organization": map[string]any{"login": "acme"},
		"installation": map[string]any{"id": 42},
	})
	if err != nil {
		panic(err)
	}
	return b
}

// sign sets the headers GitHub sends with body.
func sign(req *http.Request, body []byte, deliveryID string) {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(m.Sum(nil)))
	req.Header.Set("X-GitHub-Event", "workflow_job")
	req.Header.Set("X-GitHub-Delivery", deliveryID)
	req.Header.Set("Content-Type", "application/json")
}

// deliver posts h, signed, to the webhook listener at base and returns the
// status.
func (e *env) deliver(base string, h hook) int {
	e.t.Helper()
	body := h.body()
	req, err := http.NewRequest(http.MethodPost, base+"/webhook", bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	sign(req, body, h.id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// call sends a request to the admin API and decodes a JSON answer into out
// (when not nil); it returns the status.
func (e *env) call(method, path string, out any) int {
	e.t.Helper()
	if e.admin == nil {
		e.t.Fatal("the admin API is off")
	}
	req, err := http.NewRequest(method, e.admin.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := e.admin.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(body, out); err != nil {
			e.t.Fatalf("%s %s: %v\n%s", method, path, err, body)
		}
	}
	return resp.StatusCode
}

// kinds returns the kinds of a timeline, space-separated.
func kinds(evs []admin.Event) string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Kind)
	}
	return strings.Join(out, " ")
}

// inOrder reports whether want occur in got in this order, others between.
func inOrder(got []admin.Event, want ...string) bool {
	i := 0
	for _, ev := range got {
		if i < len(want) && ev.Kind == want[i] {
			i++
		}
	}
	return i == len(want)
}

func TestJobLifecycle(t *testing.T) {
	e := newEnv(t, nil)
	base := e.run()

	if code := e.deliver(base, hook{id: "d-1", action: fleet.ActionQueued, job: 1001}); code != http.StatusAccepted {
		t.Fatalf("queued: status %d, want 202", code)
	}
	e.until("an instance runs for job 1001", func() bool { return e.lxd.Count() == 1 })
	name := e.lxd.Names()[0]
	e.until("its runner is started", func() bool { return e.runner(name).State == fleet.RunnerStarted })

	spec, _ := e.lxd.Spec(name)
	if spec.JITConfig != fleettest.JITSecret(name) {
		t.Errorf("instance %s has JIT config %q, want the one GitHub issued for it", name, spec.JITConfig.Reveal())
	}
	if got := e.gh.Names(); !slices.Equal(got, []string{name}) {
		t.Errorf("GitHub runners = %v, want [%s]", got, name)
	}
	want := fleet.InstanceLabels{Owner: "gha-", Pool: "linux", JobID: 1001, RunnerID: 1, Org: "acme", InstallationID: 42,
		CreatedAt: e.runner(name).CreatedAt}
	if spec.Image != "img" || !strings.HasPrefix(name, "gha-linux-") || spec.Labels != want {
		t.Errorf("instance %s: image %q, labels %+v; want gha-linux-*, img, %+v", name, spec.Image, spec.Labels, want)
	}

	// GitHub delivers twice, and a redelivery keeps its id: neither launches.
	for _, id := range []string{"d-1", "d-2"} {
		if code := e.deliver(base, hook{id: id, action: fleet.ActionQueued, job: 1001}); code != http.StatusAccepted {
			t.Fatalf("queued again (%s): status %d, want 202", id, code)
		}
	}
	e.until("the duplicate is applied", func() bool { return e.pending() == 0 })
	if n, calls := e.lxd.Creates(), e.gh.JITCalls(); n != 1 || calls != 1 {
		t.Fatalf("%d instances created, %d JIT configs asked for one job; want 1 and 1", n, calls)
	}

	e.gh.Set(name, func(r *fleettest.GitHubRunner) { r.Online, r.Busy = true, true })
	if code := e.deliver(base, hook{id: "d-3", action: fleet.ActionInProgress, job: 1001, runner: name}); code != http.StatusAccepted {
		t.Fatalf("in_progress: status %d, want 202", code)
	}
	e.until("the runner is busy", func() bool { return e.runner(name).State == fleet.RunnerBusy })
	if j := e.job(1001); j.State != fleet.JobInProgress || j.RunnerName != name {
		t.Fatalf("job 1001 is %s on %q, want in_progress on %s", j.State, j.RunnerName, name)
	}
	if !e.lxd.Has(name) {
		t.Fatal("the instance of a busy runner was deleted")
	}

	e.gh.Set(name, func(r *fleettest.GitHubRunner) { r.Online, r.Busy = false, false })
	if code := e.deliver(base, hook{id: "d-4", action: fleet.ActionCompleted, job: 1001, runner: name, conclusion: "success"}); code != http.StatusAccepted {
		t.Fatalf("completed: status %d, want 202", code)
	}
	e.until("the instance is deleted", func() bool {
		evs := fleettest.Read(e.t, e.st, func(tx fleet.Tx) ([]fleet.Event, error) { return tx.Events(1001) })
		return !e.lxd.Has(name) && e.runner(name).State == fleet.RunnerDeleted && evs[len(evs)-1].Kind == "instance_deleted"
	})
	if n := e.lxd.Creates(); n != 1 {
		t.Fatalf("%d instances created in all, want 1", n)
	}

	var d admin.JobDetail
	if code := e.call("GET", "/api/jobs/1001", &d); code != http.StatusOK {
		t.Fatalf("GET /api/jobs/1001: status %d", code)
	}
	if d.State != "completed" || d.Pool != "linux" || d.Runner != name || d.Conclusion != "success" {
		t.Errorf("job 1001 = %+v, want completed in pool linux on %s with success", d.Job, name)
	}
	if !inOrder(d.Events, "queued", "accepted", "launched", "runner_started", "in_progress", "completed", "instance_deleted") {
		t.Errorf("timeline %q lacks a step or has one out of order", kinds(d.Events))
	}
	if strings.Contains(e.logs.String(), "JITSECRET") {
		t.Error("a JIT config reached the logs")
	}
}

// A signed queued delivery replayed (with a fresh delivery id, which the
// signature does not cover) after retention pruned its job must not queue
// the job again: the webhook refuses deliveries older than the retention.
func TestReplayAfterRetentionQueuesNothing(t *testing.T) {
	e := newEnv(t, nil)
	base := e.run()
	known := func(id int64) bool {
		t.Helper()
		err := e.st.View(context.Background(), func(tx fleet.Tx) error { _, err := tx.Job(id); return err })
		if err != nil && !errors.Is(err, fleet.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	e.seed(func(tx fleet.Tx) error {
		return tx.PutJob(fleet.Job{ID: 2001, RunID: 7, InstallationID: 42, Org: "acme", Repo: "acme/app", Labels: linuxLabels,
			Pool: "linux", State: fleet.JobCompleted, DeliveryID: "d-1", QueuedAt: fleettest.T0, Conclusion: "success"})
	})
	e.clock.Advance(scheduler.DefaultRetention + time.Hour)
	e.until("the job is pruned", func() bool { return !known(2001) })

	if code := e.deliver(base, hook{id: "replayed-1", action: fleet.ActionQueued, job: 2001, at: fleettest.T0}); code != http.StatusOK {
		t.Fatalf("replayed queued delivery: status %d, want 200", code)
	}
	// A fresh job is taken as usual, and applied after the replay would
	// have been.
	if code := e.deliver(base, hook{id: "d-2", action: fleet.ActionQueued, job: 2002, at: e.clock.Now()}); code != http.StatusAccepted {
		t.Fatalf("fresh queued delivery: status %d, want 202", code)
	}
	e.until("the fresh job is applied", func() bool { return e.pending() == 0 && known(2002) })
	if known(2001) {
		t.Fatal("the replayed delivery brought job 2001 back")
	}
	e.until("one instance, for the fresh job", func() bool { return e.lxd.Count() == 1 })
	if n := e.lxd.Creates(); n != 1 {
		t.Fatalf("%d instances created, want 1", n)
	}
}

func TestNewRefusesAdminOffLoopbackWithoutTokenOrTLS(t *testing.T) {
	st, err := store.Open(context.Background(), t.TempDir(), store.Options{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	deps := app.Deps{State: st, Instances: fleettest.NewInstances(), GitHub: fleettest.NewGitHub(), Log: zerolog.Nop()}
	cert, key := admintest.SelfSigned(t, "admin.example.com")
	tests := []struct {
		listen, token string
		tls           bool
		refused       string // the key a refusal names
	}{
		{"0.0.0.0:8081", "", true, "admin_token_file"},
		{":8081", "", true, "admin_token_file"},
		{"192.0.2.7:8081", "", true, "admin_token_file"},
		{"admin.example.com:8081", "", true, "admin_token_file"},
		{"[::]:8081", "", true, "admin_token_file"},
		{"0.0.0.0:8081", "s3cret", false, "admin_tls_cert_file"},
		{"admin.example.com:8081", "s3cret", false, "admin_tls_cert_file"},
		{"0.0.0.0:8081", "s3cret", true, ""},
		{"127.0.0.1:8081", "", false, ""},
		{"127.0.0.1:8081", "", true, ""},
		{"[::1]:8081", "", false, ""},
		{"localhost:8081", "", false, ""},
		{"unix:/run/autoscaler/admin.sock", "", false, ""},
		{"", "", false, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s token=%q tls=%v", tt.listen, tt.token, tt.tls), func(t *testing.T) {
			cfg := testConfig()
			cfg.AdminListen, cfg.AdminToken = tt.listen, tt.token
			if tt.tls {
				cfg.AdminTLSCert, cfg.AdminTLSKey = cert, key
			}
			a, err := app.New(cfg, deps)
			if tt.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tt.refused) {
					t.Fatalf("New: %v, want a refusal that names %s", err, tt.refused)
				}
				if cfg.Validate() == nil {
					t.Fatal("Validate accepts what New refuses")
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if (a.AdminHandler() != nil) != (tt.listen != "") {
				t.Fatalf("admin handler present = %v with admin_listen %q", a.AdminHandler() != nil, tt.listen)
			}
		})
	}
}

// With a certificate, Run serves the admin listener over TLS only: the
// API with the token, /readyz without (probes), plain HTTP not at all.
func TestAdminListenerServesTLS(t *testing.T) {
	cert, key := admintest.SelfSigned(t, "127.0.0.1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // Run listens on it again; nothing else takes it meanwhile here
	e := newEnv(t, func(c *app.Config, _ *app.Deps) {
		c.AdminListen, c.AdminToken, c.AdminTLSCert, c.AdminTLSKey = addr, "s3cret", cert, key
	})
	e.run()

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(cert)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	get := func(c *http.Client, url, token string) (int, error) {
		req, _ := http.NewRequest("GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		if resp.TLS == nil && strings.HasPrefix(url, "https:") {
			t.Errorf("%s: answered without TLS", url)
		}
		return resp.StatusCode, nil
	}
	var code int
	for i := 0; i < 50; i++ { // until Run listens
		if code, err = get(client, "https://"+addr+"/api/status", "s3cret"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || code != http.StatusOK {
		t.Fatalf("https with the token: %d %v", code, err)
	}
	if code, err := get(client, "https://"+addr+"/api/status", ""); err != nil || code != http.StatusUnauthorized {
		t.Errorf("https without the token: %d %v", code, err)
	}
	if code, err := get(client, "https://"+addr+"/readyz", ""); err != nil || (code != http.StatusOK && code != http.StatusServiceUnavailable) {
		t.Errorf("/readyz without the token: %d %v", code, err)
	}
	// Plain HTTP: Go's server answers 400 and nothing of the API.
	if code, err := get(&http.Client{Timeout: 5 * time.Second}, "http://"+addr+"/readyz", ""); err == nil && code != http.StatusBadRequest {
		t.Errorf("plain HTTP: %d", code)
	}
	// A client that does not trust the certificate gets no further.
	if _, err := get(&http.Client{Timeout: 5 * time.Second}, "https://"+addr+"/readyz", ""); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted: %v", err)
	}
}
