package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// call is one request a replica made to LXD or to the stand-in's REST API,
// as its recording proxy saw it arrive.
type call struct {
	replica int
	to      string    // "lxd" or "github"
	at      time.Time // when the request reached the proxy
	method  string
	path    string
	// name is the instance an instance create named, or the runner a JIT
	// config request named; "" for other calls.
	name string
}

func (c call) String() string {
	s := fmt.Sprintf("replica %d: %s %s %s at %s", c.replica, c.to, c.method, c.path, c.at.Format("15:04:05.000"))
	if c.name != "" {
		s += " (" + c.name + ")"
	}
	return s
}

// callLog gathers the calls of every replica, and the proxies' failures
// to pass one on.
type callLog struct {
	mu     sync.Mutex
	calls  []call
	failed []string
}

func (l *callLog) add(c call) {
	l.mu.Lock()
	l.calls = append(l.calls, c)
	l.mu.Unlock()
}

// fail notes a call the proxy could not pass on.
func (l *callLog) fail(n int, to string, r *http.Request, err error) {
	l.mu.Lock()
	l.failed = append(l.failed, fmt.Sprintf("%s replica %d: %s %s %s: %v", time.Now().Format("15:04:05.000"), n, to, r.Method, r.URL.Path, err))
	l.mu.Unlock()
}

// failures returns what fail noted.
func (l *callLog) failures() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.failed...)
}

// all returns the calls so far, in order of arrival.
func (l *callLog) all() []call {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]call(nil), l.calls...)
}

// named returns the names of the calls that are instance creates ("lxd")
// or JIT config requests ("github"), in order.
func (l *callLog) named(to string) []string {
	var out []string
	for _, c := range l.all() {
		if c.to == to && c.name != "" {
			out = append(out, c.name)
		}
	}
	return out
}

var quietProxy = log.New(io.Discard, "", 0) // an aborted handler is not news

// recordGitHub starts a proxy in front of the stand-in's REST API at
// target that records replica n's calls, and returns the API URL for
// replica n. JIT configs reach the fake runners with the stand-in's own
// URL, so the runners' traffic does not pass here.
func recordGitHub(t testing.TB, calls *callLog, n int, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			// The stand-in builds its pagination links from Host: with the
			// proxy's, the next page comes through here too.
			r.Out.Host = r.In.Host
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			calls.fail(n, "github", r, err)
			w.WriteHeader(http.StatusBadGateway) // what a proxy in front of GitHub would say
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := call{replica: n, to: "github", at: time.Now(), method: r.Method, path: r.URL.Path}
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/generate-jitconfig") {
			c.name = peekName(r)
		}
		calls.add(c)
		p.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + u.Path
}

// recordLXD starts a proxy in front of LXD's unix socket that records
// replica n's calls, and returns the socket for replica n. LXD's client
// follows operations over a websocket (GET /1.0/events): the proxy passes
// upgrades through, and records the upgrade request as one call.
func recordLXD(t testing.TB, calls *callLog, n int, socket string) string {
	t.Helper()
	// A unix socket's path must fit in 108 bytes: t.TempDir's may not.
	dir, err := os.MkdirTemp("", "e2e-lxd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "unix.socket")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	p := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = "http", "lxd"
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
			MaxIdleConnsPerHost: 8,
		},
		FlushInterval: -1,
		// LXD's socket has no proxy in front of it: a request it did not
		// take must look to the client as it would without this one, a
		// connection closed without an answer, not a 502.
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			calls.fail(n, "lxd", r, err)
			panic(http.ErrAbortHandler)
		},
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := call{replica: n, to: "lxd", at: time.Now(), method: r.Method, path: r.URL.Path}
			if r.Method == http.MethodPost && strings.TrimSuffix(r.URL.Path, "/") == "/1.0/instances" {
				c.name = peekName(r)
			}
			calls.add(c)
			p.ServeHTTP(w, r)
		}),
		ErrorLog: quietProxy,
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return path
}

// peekName reads the "name" of a JSON request body and leaves the body
// to be read again.
func peekName(r *http.Request) string {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	var v struct {
		Name string `json:"name"`
	}
	_ = json.Unmarshal(body, &v)
	return v.Name
}

// fanout stands for the load balancer in front of several replicas: it
// sends each webhook delivery to two different replicas, taken in turn,
// and answers the stand-in with the first 2xx (else the last answer,
// else 502). A replica that gave no answer at all is left out for a few
// seconds, as a load balancer's health check would leave it, so that a
// replica left alone gets every delivery. It keeps every answer.
type fanout struct {
	url     string
	targets []string
	client  *http.Client

	mu      sync.Mutex
	next    int
	downTil []time.Time
	answers []answer
}

// answer is one replica's answer to one delivery.
type answer struct {
	guid    string
	replica int
	status  int       // 0: no HTTP answer
	at      time.Time // when it came back, or the request failed
}

func (a answer) ok() bool { return a.status >= 200 && a.status <= 299 }

// fanoutDown is how long a replica that did not answer is left out.
const fanoutDown = 5 * time.Second

func newFanout(t testing.TB, targets []string) *fanout {
	t.Helper()
	f := &fanout{
		targets: targets,
		client:  &http.Client{Timeout: 10 * time.Second},
		downTil: make([]time.Time, len(targets)),
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	f.url = srv.URL + "/webhook"
	return f
}

// pick chooses the replicas for the next delivery.
func (f *fanout) pick() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	first := f.next
	f.next = (f.next + 1) % len(f.targets)
	var up, all []int
	for i := range f.targets {
		k := (first + i) % len(f.targets)
		if now.After(f.downTil[k]) && len(up) < 2 {
			up = append(up, k)
		}
		if len(all) < 2 {
			all = append(all, k)
		}
	}
	if len(up) == 0 {
		return all
	}
	return up
}

func (f *fanout) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	guid := r.Header.Get("X-GitHub-Delivery")
	picks := f.pick()
	results := make(chan int, len(picks))
	for _, k := range picks {
		go func() {
			status := f.send(k, r.Header, body)
			f.mu.Lock()
			now := time.Now()
			f.answers = append(f.answers, answer{guid: guid, replica: k, status: status, at: now})
			if status == 0 {
				f.downTil[k] = now.Add(fanoutDown)
			}
			f.mu.Unlock()
			results <- status
		}()
	}
	last := 0
	for range picks {
		status := <-results
		if status >= 200 && status <= 299 {
			w.WriteHeader(status)
			return
		}
		if status != 0 {
			last = status
		}
	}
	if last == 0 {
		last = http.StatusBadGateway
	}
	w.WriteHeader(last)
}

// send posts one delivery to replica k and returns its status, 0 when no
// answer came.
func (f *fanout) send(k int, h http.Header, body []byte) int {
	req, err := http.NewRequest(http.MethodPost, f.targets[k], bytes.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header = h.Clone()
	resp, err := f.client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// all returns every answer so far.
func (f *fanout) all() []answer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]answer(nil), f.answers...)
}
