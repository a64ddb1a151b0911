package metrics_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghapp"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake/ghfaketest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/metrics"
)

// scrape returns the text exposition of m, as Prometheus would read it.
func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: %d", rec.Code)
	}
	return rec.Body.String()
}

func TestGitHubTransportAgainstServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/access_tokens"):
			w.Header().Set("X-RateLimit-Remaining", "4999")
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"token":"ghs_answeredtoken"}`)
		case strings.Contains(r.URL.Path, "/actions/runners/"):
			w.Header().Set("X-RateLimit-Remaining", "4321")
			if r.Method == http.MethodDelete {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			w.WriteHeader(http.StatusNotFound)
		default:
			io.WriteString(w, "no rate limit header here")
		}
	}))
	defer srv.Close()

	m := metrics.New("dev")
	client := &http.Client{Transport: metrics.GitHubTransport(srv.Client().Transport, m)}
	do := func(method, path, auth string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", auth)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	status, body := do(http.MethodPost, "/api/v3/app/installations/987654321/access_tokens?secret_q=tok-in-query", "Bearer jwt-secret-abc")
	if status != http.StatusCreated || body != `{"token":"ghs_answeredtoken"}` {
		t.Errorf("answer changed on the way: %d %q", status, body)
	}
	do(http.MethodGet, "/api/v3/orgs/acme-corp-zz/actions/runners/555444333?per_page=100", "token ghs_secrettoken")
	do(http.MethodGet, "/api/v3/orgs/acme-corp-zz/actions/runners/555444333", "token ghs_secrettoken")
	do(http.MethodDelete, "/api/v3/orgs/acme-corp-zz/actions/runners/555444333", "token ghs_secrettoken")
	g := m.Registry()
	want(t, g, metrics.GitHubRateLimitRemaining, nil, 4321)
	// An answer without the header leaves the gauge as it was.
	do(http.MethodGet, "/api/v3/repos/acme-corp-zz/secret-repo/issues", "token ghs_secrettoken")
	want(t, g, metrics.GitHubRateLimitRemaining, nil, 4321)

	want(t, g, metrics.GitHubRequestsTotal, L{"endpoint": "/app/installations/{id}/access_tokens", "method": "POST", "status": "201"}, 1)
	want(t, g, metrics.GitHubRequestsTotal, L{"endpoint": "/orgs/{org}/actions/runners/{id}", "method": "GET", "status": "404"}, 2)
	want(t, g, metrics.GitHubRequestsTotal, L{"endpoint": "/orgs/{org}/actions/runners/{id}", "method": "DELETE", "status": "204"}, 1)
	want(t, g, metrics.GitHubRequestsTotal, L{"endpoint": "other", "method": "GET", "status": "200"}, 1)
	want(t, g, metrics.GitHubRequestDurationSeconds, L{"endpoint": "/orgs/{org}/actions/runners/{id}"}, 3)
	want(t, g, metrics.GitHubRequestDurationSeconds, L{"endpoint": "/app/installations/{id}/access_tokens"}, 1)

	text := scrape(t, m)
	for _, leak := range []string{"jwt-secret-abc", "ghs_secrettoken", "ghs_answeredtoken", "tok-in-query", "secret_q", "per_page",
		"987654321", "555444333", "acme-corp-zz", "secret-repo", "/api/v3"} {
		if strings.Contains(text, leak) {
			t.Errorf("the scrape contains %q", leak)
		}
	}
}

func TestGitHubTransportErrors(t *testing.T) {
	m := metrics.New("dev")
	g := m.Registry()

	// A server that is gone: the request gets no answer at all.
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	client := &http.Client{Transport: metrics.GitHubTransport(http.DefaultTransport.(*http.Transport).Clone(), m)}
	if resp, err := client.Post(url+"/orgs/acme/actions/runners/generate-jitconfig", "application/json", strings.NewReader("{}")); err == nil {
		resp.Body.Close()
		t.Fatal("no error from a closed server")
	}
	want(t, g, metrics.GitHubRequestsTotal, L{"endpoint": "/orgs/{org}/actions/runners/generate-jitconfig", "method": "POST", "status": "error"}, 1)
	want(t, g, metrics.GitHubRequestDurationSeconds, L{"endpoint": "/orgs/{org}/actions/runners/generate-jitconfig"}, 1)
	if _, ok := sample(t, g, metrics.GitHubRateLimitRemaining, nil); ok {
		t.Error("rate limit gauge set without an answer")
	}

	// The error itself reaches the caller untouched.
	boom := errors.New("boom")
	rt := metrics.GitHubTransport(roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, boom }), m)
	req, _ := http.NewRequest(http.MethodGet, "https://api.github.com/orgs/acme/actions/runner-groups", nil)
	if _, err := rt.RoundTrip(req); !errors.Is(err, boom) {
		t.Errorf("RoundTrip error = %v, want boom", err)
	}
	want(t, g, metrics.GitHubRequestsTotal, L{"endpoint": "/orgs/{org}/actions/runner-groups", "method": "GET", "status": "error"}, 1)
}

// TestGitHubTransportUnderTheClient runs the real GitHub client against the
// GitHub stand-in, served under /api/v3 like GitHub Enterprise Server.
func TestGitHubTransportUnderTheClient(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	const org, instID = "acme-corp-zz", 7
	fake, err := ghfake.New(ghfake.Options{
		AppID: 42, AppPublicKey: &key.PublicKey, Org: org, InstallationID: instID,
		PathPrefix: "/api/v3/", Log: zerolog.New(zerolog.NewTestWriter(t)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()

	m := metrics.New("dev")
	rec := ghfaketest.NewAuthRecorder()
	c, err := ghapp.New(ghapp.Config{
		APIURL: fake.URL(), AppID: 42, Transport: metrics.GitHubTransport(rec, m),
		PrivateKey: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
	}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	jit, err := c.GenerateJITConfig(ctx, fleet.JITRequest{InstallationID: instID, Org: org, Name: "runner-one", Labels: []string{"self-hosted", "linux"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Runner(ctx, instID, org, jit.RunnerID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListRunners(ctx, instID, org); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveRunner(ctx, instID, org, jit.RunnerID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Runner(ctx, instID, org, jit.RunnerID); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("Runner after removal: %v, want ErrNotFound", err)
	}
	if _, err := c.AppDeliveries(ctx, time.Time{}); err != nil {
		t.Fatal(err)
	}

	g := m.Registry()
	for _, s := range []struct {
		endpoint, method, status string
	}{
		{"/app/installations/{id}/access_tokens", "POST", "201"},
		{"/orgs/{org}/actions/runner-groups", "GET", "200"},
		{"/orgs/{org}/actions/runners/generate-jitconfig", "POST", "201"},
		{"/orgs/{org}/actions/runners/{id}", "GET", "200"},
		{"/orgs/{org}/actions/runners/{id}", "DELETE", "204"},
		{"/orgs/{org}/actions/runners/{id}", "GET", "404"},
		{"/orgs/{org}/actions/runners", "GET", "200"},
		{"/app/hook/deliveries", "GET", "200"},
	} {
		if v, ok := sample(t, g, metrics.GitHubRequestsTotal, L{"endpoint": s.endpoint, "method": s.method, "status": s.status}); !ok || v < 1 {
			t.Errorf("no %s %s %s counted", s.method, s.endpoint, s.status)
		}
	}
	want(t, g, metrics.GitHubRateLimitRemaining, nil, 4999) // what the stand-in sends
	if v, _ := sample(t, g, metrics.GitHubRequestsTotal, L{"endpoint": "other", "method": "GET", "status": "200"}); v != 0 {
		t.Errorf("%v requests of the client fell to endpoint other", v)
	}

	text := scrape(t, m)
	secrets := append([]string{jit.Config.Reveal(), org, "/api/v3"}, rec.Secrets()...)
	if len(secrets) < 4 {
		t.Fatal("no credentials recorded")
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("the scrape contains a credential or an id (%d chars)", len(s))
		}
	}
}
