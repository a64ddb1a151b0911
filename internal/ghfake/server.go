// Package ghfake is a stateful stand-in for the parts of GitHub this service
// uses: GitHub App authentication and installations, Apps made through
// the App-manifest flow (its web pages and the conversion), org self-hosted
// runners with JIT configs, runner groups and the repositories they admit,
// workflow jobs and their workflow_job webhooks, and the App's webhook
// deliveries. It also contains
// the fake runner program (RunRunner) that plays the Actions runner inside an
// LXD instance.
//
// It is a normal package (not _test) because the service's dev mode and the
// end-to-end tests both run against it. It only ever listens on the address
// given (loopback by default).
package ghfake

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Options configure a Server.
type Options struct {
	// AppID and AppPublicKey make the App the stand-in starts with,
	// installed on Org (unless NotInstalled). Leave both unset to start
	// with no App: the manifest flow (apps.go) creates one.
	AppID         int64
	AppPublicKey  *rsa.PublicKey
	NotInstalled  bool
	WebhookSecret []byte // empty: webhooks are sent unsigned, as GitHub does
	// WebhookURL is where webhooks are POSTed; may be set later with
	// SetWebhookURL. Deliveries attempted while it is empty are recorded as
	// failed.
	WebhookURL     string
	Org            string           // default "fake-org"
	InstallationID int64            // default 1
	RunnerGroups   map[string]int64 // default {"Default": 1}
	// PublicRunnerGroups names the groups whose runners may take jobs of
	// public repositories. As on GitHub, a group does not by default.
	PublicRunnerGroups []string
	// RunnerGroupSettings sets the access of groups named in RunnerGroups;
	// a group not named here admits every private repository (visibility
	// all), as GitHub's new groups do. SetRunnerGroup changes it later.
	RunnerGroupSettings map[string]RunnerGroupSettings
	Listen              string // default "127.0.0.1:0"
	// PathPrefix serves the API under a sub-path, like GitHub Enterprise
	// Server's "/api/v3/". Default "/".
	PathPrefix string
	// RunnerURL is the base URL written into JIT configs, i.e. where a fake
	// runner reaches this server (e.g. through an LXD proxy device). Default
	// URL().
	RunnerURL string
	// RunnerOfflineAfter is how long a connected runner may go without
	// polling before it reports "offline". Default 5s.
	RunnerOfflineAfter time.Duration
	// RunnerLostAfter is how long a busy runner may go unheard before its
	// job fails, as GitHub fails a job whose runner lost communication.
	// Default 15s.
	RunnerLostAfter time.Duration
	Log             zerolog.Logger
}

// Server is the stand-in. All methods are safe for concurrent use.
type Server struct {
	opts          Options
	log           zerolog.Logger
	prefix        string // path prefix without trailing slash; "" for root
	url           string
	runnerURL     string
	offlineAfter  time.Duration
	orgID         int64
	hookID        int64
	ln            net.Listener
	httpSrv       *http.Server
	webhookClient *http.Client

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced on every state change
	webhookURL string
	secret     []byte               // what webhooks are signed with: the current App's
	apps       map[int64]*fakeApp   // every App created, by id
	current    *fakeApp             // the one installed on Org, whose webhooks are sent; nil before any
	manifests  map[string]*manifest // manifests posted, waiting for the owner's confirmation, by token
	codes      map[string]*manifest // confirmed, waiting for their conversion, by code
	fault      func(*http.Request) (int, http.Header, bool)
	latency    map[string]time.Duration // by route pattern: how long its answers take
	drop       func(event, action string, jobID int64) bool
	requests   map[string]int
	tokens     map[string]token   // installation token -> its org and expiry
	installs   []*installation    // the current App's installations beyond Org's, in creation order
	groups     []*runnerGroup     // sorted by id
	runners    map[int64]*runner  // registered, not yet removed
	sessions   map[string]*runner // connected fake runners by session id
	jobs       []*job             // in creation order
	jobsByID   map[int64]*job
	labelIDs   map[string]int64
	repoIDs    map[string]int64
	repoPublic map[string]bool // by repository, as its last job said
	hang       int
	stall      int
	outbox     []*delivery // waiting to be sent, in order
	outboxWake chan struct{}
	deliveries []*delivery // attempted, in order
	next       struct{ runner, job, run, label, repo, delivery, app, install int64 }
}

// New starts a stand-in listening on opts.Listen.
func New(opts Options) (*Server, error) {
	var errs []error
	if opts.AppID < 0 || (opts.AppID == 0) != (opts.AppPublicKey == nil) {
		errs = append(errs, errors.New("AppID (positive) and AppPublicKey go together"))
	}
	if opts.Org == "" {
		opts.Org = "fake-org"
	}
	if opts.InstallationID == 0 {
		opts.InstallationID = 1
	}
	if len(opts.RunnerGroups) == 0 {
		opts.RunnerGroups = map[string]int64{"Default": 1}
	}
	for name, id := range opts.RunnerGroups {
		if name == "" || id <= 0 {
			errs = append(errs, fmt.Errorf("runner group %q: name and positive id required", name))
		}
	}
	for name, g := range opts.RunnerGroupSettings {
		if _, ok := opts.RunnerGroups[name]; !ok {
			errs = append(errs, fmt.Errorf("runner group settings for %q: no such group in RunnerGroups", name))
		}
		if err := g.check(); err != nil {
			errs = append(errs, fmt.Errorf("runner group %q: %w", name, err))
		}
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	if opts.RunnerOfflineAfter <= 0 {
		opts.RunnerOfflineAfter = 5 * time.Second
	}
	if opts.RunnerLostAfter <= 0 {
		opts.RunnerLostAfter = 15 * time.Second
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("ghfake: %w", err)
	}

	prefix := "/" + strings.Trim(opts.PathPrefix, "/")
	if prefix == "/" {
		prefix = ""
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("ghfake: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:         opts,
		log:          opts.Log.With().Str("component", "ghfake").Logger(),
		prefix:       prefix,
		url:          "http://" + ln.Addr().String() + prefix + "/",
		offlineAfter: opts.RunnerOfflineAfter,
		orgID:        9000001,
		hookID:       4200001,
		ln:           ln,
		webhookClient: &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{Proxy: nil, DisableKeepAlives: false, MaxIdleConnsPerHost: 2},
			// GitHub does not follow redirects for webhooks.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		ctx:        ctx,
		cancel:     cancel,
		changed:    make(chan struct{}),
		webhookURL: opts.WebhookURL,
		secret:     opts.WebhookSecret,
		apps:       map[int64]*fakeApp{},
		manifests:  map[string]*manifest{},
		codes:      map[string]*manifest{},
		requests:   map[string]int{},
		latency:    map[string]time.Duration{},
		tokens:     map[string]token{},
		runners:    map[int64]*runner{},
		sessions:   map[string]*runner{},
		jobsByID:   map[int64]*job{},
		labelIDs:   map[string]int64{},
		repoIDs:    map[string]int64{},
		repoPublic: map[string]bool{},
		outboxWake: make(chan struct{}, 1),
	}
	s.runnerURL = opts.RunnerURL
	if s.runnerURL == "" {
		s.runnerURL = s.url
	}
	for name, id := range opts.RunnerGroups {
		g := &runnerGroup{id: id, name: name, visibility: VisibilityAll}
		if set, ok := opts.RunnerGroupSettings[name]; ok {
			g.set(set)
		}
		if slices.Contains(opts.PublicRunnerGroups, name) {
			g.allowsPublic = true
		}
		s.groups = append(s.groups, g)
	}
	sort.Slice(s.groups, func(i, j int) bool { return s.groups[i].id < s.groups[j].id })
	s.next.runner = 100
	s.next.job = 20000
	s.next.run = 7000
	s.next.label = 10
	s.next.repo = 500000
	s.next.delivery = 80000000
	s.next.app = 880000
	s.next.install = opts.InstallationID + 100
	if opts.AppID != 0 {
		a := &fakeApp{id: opts.AppID, slug: "lxd-gha-autoscaler-" + strings.ToLower(opts.Org), key: opts.AppPublicKey,
			installed: !opts.NotInstalled, createdAt: time.Now()}
		a.name = a.slug
		s.apps[a.id], s.current = a, a
	}

	s.httpSrv = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(3)
	go s.reapLostRunners()
	go func() {
		defer s.wg.Done()
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg("serve failed")
		}
	}()
	go func() {
		defer s.wg.Done()
		s.sendLoop()
	}()
	s.log.Info().Str("url", s.url).Str("org", opts.Org).Int64("installation_id", opts.InstallationID).Msg("fake github listening")
	return s, nil
}

// URL is the REST base URL, with a trailing slash.
func (s *Server) URL() string { return s.url }

// WebURL is where the stand-in serves GitHub's web pages (the App
// manifest flow, an App's installation), with a trailing slash: the root
// of its host, as GitHub Enterprise Server serves them, whatever
// PathPrefix puts the API under.
func (s *Server) WebURL() string { return "http://" + s.ln.Addr().String() + "/" }

// Org is the organization login the stand-in serves.
func (s *Server) Org() string { return s.opts.Org }

// InstallationID is the App installation id the stand-in serves.
func (s *Server) InstallationID() int64 { return s.opts.InstallationID }

// Close stops serving, abandons undelivered webhooks and unblocks fake
// runners' long polls.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.cancel()
		_ = s.httpSrv.Close()
		s.wg.Wait()
		s.webhookClient.CloseIdleConnections()
	})
}

// SetWebhookURL sets where webhooks go from now on.
func (s *Server) SetWebhookURL(u string) {
	s.mu.Lock()
	s.webhookURL = u
	s.mu.Unlock()
}

// SetFault installs a hook consulted before every REST request (not the fake
// runner's endpoints); when it returns ok, the request is answered with that
// status and headers and a GitHub-style error body. nil removes it.
func (s *Server) SetFault(f func(r *http.Request) (status int, header http.Header, ok bool)) {
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
}

// SetLatency makes every answer of a REST route (its pattern, e.g.
// "POST /orgs/{org}/actions/runners/generate-jitconfig") take d, as
// GitHub's own answers take a few hundred milliseconds. Zero removes it.
func (s *Server) SetLatency(pattern string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		delete(s.latency, pattern)
		return
	}
	s.latency[pattern] = d
}

// DropWebhooks installs a filter: a first delivery for which it returns true
// is recorded as failed (status code 502) but not sent. Redeliveries are
// never dropped, so a test can recover with Redeliver. nil removes it.
func (s *Server) DropWebhooks(f func(event, action string, jobID int64) bool) {
	s.mu.Lock()
	s.drop = f
	s.mu.Unlock()
}

// HangRunners makes the next n fake runners that connect hang: their JIT
// config is consumed but they never come online and sleep until killed, like
// a runner that never manages to register.
func (s *Server) HangRunners(n int) {
	s.mu.Lock()
	s.hang = n
	s.mu.Unlock()
}

// StallRunners makes the next n fake runners that connect go silent once
// online: they never poll, so GitHub lists them offline after
// RunnerOfflineAfter and gives them no job, while they sleep until killed,
// like a runner process that hung or lost its network.
func (s *Server) StallRunners(n int) {
	s.mu.Lock()
	s.stall = n
	s.mu.Unlock()
}

// Requests counts the requests served, by "METHOD /route-pattern" (e.g.
// "GET /orgs/{org}/actions/runners/{id}"), faulted ones included.
func (s *Server) Requests() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.requests))
	for k, v := range s.requests {
		out[k] = v
	}
	return out
}

// notifyLocked wakes everything waiting for a state change.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitFor blocks until cond holds for a snapshot taken with s.mu held (cond
// itself runs unlocked, so it may call back into the server). It also
// re-checks periodically because runner online/offline status depends on
// time.
func waitFor[T any](ctx context.Context, s *Server, snap func() T, cond func(T) bool) (T, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		v := snap()
		ch := s.changed
		s.mu.Unlock()
		if cond(v) {
			return v, nil
		}
		select {
		case <-ch:
		case <-tick.C:
		case <-ctx.Done():
			return v, ctx.Err()
		case <-s.ctx.Done():
			return v, errors.New("ghfake: server closed")
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on supported platforms
	return hex.EncodeToString(b)
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func ts(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	v := t.UTC().Format(time.RFC3339)
	return &v
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

// writeError answers like GitHub's REST API does.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{
		"message":           msg,
		"documentation_url": "https://docs.github.com/rest",
		"status":            strconv.Itoa(status),
	})
}

// reapLostRunners fails the job of a busy runner that has not been heard
// from for RunnerLostAfter (its instance died), and drops the runner.
func (s *Server) reapLostRunners() {
	defer s.wg.Done()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		s.mu.Lock()
		now := time.Now()
		for _, r := range s.runners {
			j := r.job
			if r.removed || j == nil || j.status != StatusInProgress || r.polling > 0 || now.Sub(r.lastSeen) < s.opts.RunnerLostAfter {
				continue
			}
			j.status, j.conclusion, j.completedAt = StatusCompleted, ConclusionFailure, now
			s.log.Info().Int64("job_id", j.id).Str("runner_name", r.name).Msg("runner lost communication: job failed")
			s.enqueueJobEventLocked(j, "completed")
			s.removeRunnerLocked(r, stopDone)
			s.notifyLocked()
		}
		s.mu.Unlock()
	}
}
