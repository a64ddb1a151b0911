package app

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// readiness runs the checks behind /readyz: the state database is
// writable, LXD answers, a GitHub installation token can be had. Results
// are cached briefly so that a busy prober does not become load on LXD or
// GitHub.
type readiness struct {
	st          fleet.State
	clock       fleet.Clock
	checkLXD    func(context.Context) error
	checkGitHub func(context.Context, int64) error
	// leader says who leads; nil for a lone replica. Not a check: a
	// follower is as ready to take webhooks as the leader.
	leader func(context.Context) *LeaderStatus

	mu     sync.Mutex
	at     time.Time
	ok     bool
	checks map[string]string
}

const readyCacheFor = 5 * time.Second

func newReadiness(st fleet.State, clock fleet.Clock, lxd func(context.Context) error, gh func(context.Context, int64) error) *readiness {
	return &readiness{st: st, clock: clock, checkLXD: lxd, checkGitHub: gh}
}

func (r *readiness) check(ctx context.Context) (bool, map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.clock.Now().Sub(r.at) < readyCacheFor {
		return r.ok, r.checks
	}
	// The answer is cached and shared: a caller that gives up (a probe's
	// timeout, a closed status page) must not make it "context canceled".
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	checks := map[string]string{}
	set := func(name string, err error) {
		checks[name] = admin.CheckOK
		if err != nil {
			checks[name] = err.Error()
		}
	}
	set("state", r.st.Ping(ctx))
	if r.checkLXD != nil {
		set("lxd", r.checkLXD(ctx))
	}
	if r.checkGitHub != nil {
		var orgs []fleet.Org
		err := r.st.View(ctx, func(tx fleet.Tx) error {
			var err error
			orgs, err = tx.JobOrgs()
			return err
		})
		if err == nil && len(orgs) > 0 {
			err = r.checkGitHub(ctx, orgs[0].InstallationID)
		}
		set("github", err)
	}
	ok := true
	for _, v := range checks {
		ok = ok && v == admin.CheckOK
	}
	r.at, r.ok, r.checks = r.clock.Now(), ok, checks
	return ok, checks
}

// ServeHTTP answers 200 when every check passes, else 503; the body says
// which check failed.
func (r *readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	ok, checks := r.check(req.Context())
	names := make([]string, 0, len(checks))
	for k := range checks {
		names = append(names, k)
	}
	sort.Strings(names)
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	var leader *LeaderStatus
	if r.leader != nil {
		leader = r.leader(req.Context())
	}
	_ = json.NewEncoder(w).Encode(struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
		Leader *LeaderStatus     `json:"leader,omitempty"`
	}{ok, checks, leader})
}
