package ghapp

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake/ghfaketest"
)

// authCatcher is a second server, on another port of the same machine (so
// another host as URLs count): it records every Authorization header it
// is sent.
type authCatcher struct {
	srv   *httptest.Server
	mu    sync.Mutex
	auths []string
}

func newAuthCatcher(t *testing.T) *authCatcher {
	a := &authCatcher{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.auths = append(a.auths, r.Header.Get("Authorization"))
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id": 1, "name": "elsewhere", "status": "online"}`))
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *authCatcher) got() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.auths...)
}

// A redirect to another host is not followed: the installation token and
// the App's JWT are added to every request by the transport, and must
// never reach a host other than the API's.
func TestRedirectToAnotherHostRefused(t *testing.T) {
	e := newEnv(t, nil, nil)
	other := newAuthCatcher(t)
	r := e.jit("r1")
	runnerPath := "/orgs/acme/actions/runners/" + strconv.FormatInt(r.RunnerID, 10)

	for _, tc := range []struct {
		name     string
		status   int
		location string
		call     func() error
		match    func(*http.Request) bool
	}{
		{"installation token, 307", http.StatusTemporaryRedirect, other.srv.URL + runnerPath,
			func() error { _, err := e.c.Runner(ctx(t), instID, org, r.RunnerID); return err },
			path("GET", runnerPath)},
		{"installation token, 301", http.StatusMovedPermanently, other.srv.URL + runnerPath,
			func() error { return e.c.RemoveRunner(ctx(t), instID, org, r.RunnerID) },
			path("DELETE", runnerPath)},
		{"App JWT", http.StatusFound, other.srv.URL + "/app/hook/deliveries",
			func() error { _, err := e.c.AppDeliveries(ctx(t), time.Time{}); return err },
			path("GET", "/app/hook/deliveries")},
		{"same host, https", http.StatusTemporaryRedirect, strings.Replace(e.fake.URL(), "http://", "https://", 1) + strings.TrimPrefix(runnerPath, "/"),
			func() error { _, err := e.c.Runner(ctx(t), instID, org, r.RunnerID); return err },
			path("GET", runnerPath)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.fake.Requests()
			e.fault(1, tc.match, tc.status, http.Header{"Location": {tc.location}})
			err := tc.call()
			if !errors.Is(err, ErrOtherHost) {
				t.Fatalf("err = %v, want ErrOtherHost", err)
			}
			if got := other.got(); len(got) != 0 {
				t.Fatalf("the other host was sent credentials: %.20q", got)
			}
			// Refused once, not retried.
			after := e.fake.Requests()
			n := 0
			for k, v := range after {
				n += v - before[k]
			}
			if n != 1 {
				t.Fatalf("%d requests reached the stand-in, want 1", n)
			}
		})
	}
	for _, s := range e.rec.Secrets() {
		if strings.Contains(e.logs.String(), s) {
			t.Fatal("a credential in the logs")
		}
	}
}

// A redirect within the API's host is followed, credentials and all.
func TestRedirectOnTheSameHostFollowed(t *testing.T) {
	e := newEnv(t, nil, nil)
	r := e.jit("r1")
	runnerPath := "orgs/acme/actions/runners/" + strconv.FormatInt(r.RunnerID, 10)
	e.fault(1, path("GET", runnerPath), http.StatusMovedPermanently, http.Header{"Location": {e.fake.URL() + runnerPath + "?moved=1"}})
	st, err := e.c.Runner(ctx(t), instID, org, r.RunnerID)
	if err != nil || st.Name != "r1" {
		t.Fatalf("runner after a same-host redirect: %+v %v", st, err)
	}
	if n := e.fake.Requests()["GET /orgs/{org}/actions/runners/{id}"]; n != 2 {
		t.Fatalf("%d requests, want the redirect and the one it pointed to", n)
	}
}

// The guard under the credentials holds whatever asks: a request built for
// another host is not sent at all.
func TestOriginGuard(t *testing.T) {
	rec := ghfaketest.NewAuthRecorder()
	g := originGuard{base: rec, scheme: "https", host: "api.github.com"}
	for _, u := range []string{"https://evil.example/x", "http://api.github.com/x", "https://api.github.com:8443/x"} {
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Authorization", "token ghs_secret")
		if _, err := g.RoundTrip(req); !errors.Is(err, ErrOtherHost) {
			t.Errorf("%s: err = %v, want ErrOtherHost", u, err)
		}
	}
	if got := rec.Secrets(); len(got) != 0 {
		t.Fatalf("sent: %v", got)
	}
}

func TestAPIURLMustBeHTTPSOffLoopback(t *testing.T) {
	key := ghfaketest.KeyPEM(ghfaketest.AppKey())
	for u, ok := range map[string]bool{
		"https://api.github.com/":          true,
		"https://ghe.example.com/api/v3":   true,
		"http://127.0.0.1:8080/":           true,
		"http://127.0.0.53/":               true,
		"http://[::1]:9000/api/v3/":        true,
		"http://localhost:3000/":           true,
		"http://LOCALHOST/":                true,
		"http://api.github.com/":           false,
		"http://ghe.example.com/api/v3/":   false,
		"http://10.0.0.1/":                 false,
		"http://[::2]/":                    false,
		"http://localhost.example.com/":    false,
		"http://127.0.0.1.example.com/":    false,
		"http://0.0.0.0:8080/":             false,
		"http://[::ffff:10.0.0.1]:8080/":   false,
		"http://[::ffff:127.0.0.1]:8080/x": true,
	} {
		err := Config{APIURL: u, AppID: 1, PrivateKey: key}.Validate()
		if ok != (err == nil) {
			t.Errorf("%s: Validate() = %v", u, err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "github.api_url") || !strings.Contains(err.Error(), "must be https")) {
			t.Errorf("%s: error %v does not say why in the file's words", u, err)
		}
	}
}
