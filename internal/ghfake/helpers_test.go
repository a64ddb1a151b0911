package ghfake

import (
	"context"
	"crypto/rsa"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake/ghfaketest"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v62/github"
	"github.com/rs/zerolog"
)

const testSecret = "hook-secret"

type received struct {
	event, guid, action string
	jobID               int64
	body                []byte
	header              http.Header
}

// sink is a webhook receiver that checks signatures like the service will.
type sink struct {
	t   *testing.T
	srv *httptest.Server
	mu  sync.Mutex
	got []received
	bad int // deliveries whose signature did not verify
}

func newSink(t *testing.T) *sink {
	s := &sink{t: t}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ok := github.ValidateSignature(r.Header.Get(github.SHA256SignatureHeader), body, []byte(testSecret)) == nil &&
			github.ValidateSignature(r.Header.Get(github.SHA1SignatureHeader), body, []byte(testSecret)) == nil
		rec := received{event: r.Header.Get("X-GitHub-Event"), guid: r.Header.Get("X-GitHub-Delivery"), body: body, header: r.Header.Clone()}
		if ev, err := github.ParseWebHook(rec.event, body); err == nil {
			if wj, isJob := ev.(*github.WorkflowJobEvent); isJob {
				rec.action = wj.GetAction()
				rec.jobID = wj.GetWorkflowJob().GetID()
			}
		}
		s.mu.Lock()
		if !ok {
			s.bad++
		}
		s.got = append(s.got, rec)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sink) all() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.got...)
}

// forJob returns the actions received for a job, in order.
func (s *sink) forJob(id int64) []received {
	var out []received
	for _, r := range s.all() {
		if r.jobID == id {
			out = append(out, r)
		}
	}
	return out
}

type env struct {
	t    *testing.T
	srv  *Server
	sink *sink
	key  *rsa.PrivateKey
}

func newEnv(t *testing.T, mod func(*Options)) *env {
	t.Helper()
	key := ghfaketest.AppKey()
	sk := newSink(t)
	opts := Options{
		AppID: 42, AppPublicKey: &key.PublicKey, WebhookSecret: []byte(testSecret), WebhookURL: sk.srv.URL,
		Org: "acme", InstallationID: 7, RunnerGroups: map[string]int64{"Default": 1, "lxd": 3},
		Log: zerolog.New(zerolog.NewTestWriter(t)),
	}
	if mod != nil {
		mod(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, sink: sk, key: key}
}

// gh is a go-github client authenticated as the installation, exactly as the
// service will build it.
func (e *env) gh() *github.Client {
	e.t.Helper()
	itr, err := ghinstallation.New(http.DefaultTransport, 42, 7, ghfaketest.KeyPEM(e.key))
	if err != nil {
		e.t.Fatal(err)
	}
	itr.BaseURL = e.srv.URL()[:len(e.srv.URL())-1]
	c := github.NewClient(&http.Client{Transport: itr})
	c.BaseURL, _ = url.Parse(e.srv.URL())
	return c
}

// appGH is a go-github client authenticated as the App (JWT).
func (e *env) appGH() *github.Client {
	e.t.Helper()
	atr, err := ghinstallation.NewAppsTransport(http.DefaultTransport, 42, ghfaketest.KeyPEM(e.key))
	if err != nil {
		e.t.Fatal(err)
	}
	c := github.NewClient(&http.Client{Transport: atr})
	c.BaseURL, _ = url.Parse(e.srv.URL())
	return c
}

func (e *env) jit(name string, labels ...string) *github.JITRunnerConfig {
	e.t.Helper()
	cfg, _, err := e.gh().Actions.GenerateOrgJITConfig(ctx(e.t), "acme", &github.GenerateJITConfigRequest{
		Name: name, RunnerGroupID: 1, Labels: labels,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return cfg
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// startRunner runs the fake runner in-process; its result arrives on the channel.
func startRunner(t *testing.T, jitconfig string) (<-chan error, context.CancelFunc) {
	t.Helper()
	sock := ghfaketest.DevLXD(t, jitconfig)
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	done := make(chan error, 1)
	logw := &fleettest.LogBuffer{} // output may arrive after the test ended
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fake runner output:\n%s", logw.String())
		}
	})
	go func() { done <- RunRunner(c, RunnerOptions{DevLXDSocket: sock, Log: logw}) }()
	return done, cancel
}

func result(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("fake runner did not return")
		return errors.New("unreachable")
	}
}

func statusOf(err error) int {
	var er *github.ErrorResponse
	if errors.As(err, &er) && er.Response != nil {
		return er.Response.StatusCode
	}
	return 0
}
