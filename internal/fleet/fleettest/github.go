package fleettest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// GitHub is an in-memory GitHub: fleet.GitHub keeping runner records, with
// knobs and counters. It answers for any installation and organization;
// the GitHub stand-in (internal/ghfake) checks those over HTTP.
type GitHub struct {
	mu           sync.Mutex
	next         int64
	runners      map[int64]*GitHubRunner
	jitCalls     int
	removes      int
	failJIT      int
	busyOnCreate bool
	jobs         map[int64]fleet.JobStatus
	jobReads     int
	failJobReads int
	installs     []fleet.Org
	installReads int
	failInstalls int
}

// GitHubRunner is one runner record.
type GitHubRunner struct {
	Name         string
	Group        string // the runner group the JIT request named
	Online, Busy bool
}

var _ fleet.GitHub = (*GitHub)(nil)

// NewGitHub returns a GitHub with no runners.
func NewGitHub() *GitHub {
	return &GitHub{runners: map[int64]*GitHubRunner{}, jobs: map[int64]fleet.JobStatus{}}
}

// JITSecret is the JIT config GenerateJITConfig hands out for a runner name:
// tests look for it where it must never be.
func JITSecret(name string) fleet.Secret { return fleet.Secret("JITSECRET-" + name) }

func (g *GitHub) GenerateJITConfig(_ context.Context, req fleet.JITRequest) (fleet.JITRunner, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.jitCalls++
	if g.failJIT > 0 {
		g.failJIT--
		return fleet.JITRunner{}, errors.New("github: 503")
	}
	for _, r := range g.runners {
		if r.Name == req.Name {
			return fleet.JITRunner{}, fmt.Errorf("runner %s: 409 already exists", req.Name)
		}
	}
	g.next++
	g.runners[g.next] = &GitHubRunner{Name: req.Name, Group: req.RunnerGroup, Online: g.busyOnCreate, Busy: g.busyOnCreate}
	return fleet.JITRunner{RunnerID: g.next, Config: JITSecret(req.Name)}, nil
}

func (g *GitHub) Runner(_ context.Context, _ int64, _ string, id int64) (fleet.RunnerStatus, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	r, ok := g.runners[id]
	if !ok {
		return fleet.RunnerStatus{}, fmt.Errorf("runner %d: %w", id, fleet.ErrNotFound)
	}
	return fleet.RunnerStatus{ID: id, Name: r.Name, Online: r.Online, Busy: r.Busy}, nil
}

func (g *GitHub) RemoveRunner(_ context.Context, _ int64, _ string, id int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	r, ok := g.runners[id]
	if !ok {
		return nil
	}
	if r.Busy {
		return fleet.ErrRunnerBusy
	}
	g.removes++
	delete(g.runners, id)
	return nil
}

func (g *GitHub) ListRunners(context.Context, int64, string) ([]fleet.RunnerStatus, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]fleet.RunnerStatus, 0, len(g.runners))
	for id, r := range g.runners {
		out = append(out, fleet.RunnerStatus{ID: id, Name: r.Name, Online: r.Online, Busy: r.Busy})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// WorkflowJob answers what SetJob said of the job; a job it was told
// nothing of is queued.
func (g *GitHub) WorkflowJob(_ context.Context, _ int64, _ string, id int64) (fleet.JobStatus, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.jobReads++
	if g.failJobReads > 0 {
		g.failJobReads--
		return fleet.JobStatus{}, errors.New("github: 502")
	}
	if st, ok := g.jobs[id]; ok {
		return st, nil
	}
	return fleet.JobStatus{Status: string(fleet.ActionQueued)}, nil
}

// Installations answers what SetInstallations said: none at first.
func (g *GitHub) Installations(context.Context) ([]fleet.Org, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.installReads++
	if g.failInstalls > 0 {
		g.failInstalls--
		return nil, errors.New("github: 502")
	}
	return append([]fleet.Org(nil), g.installs...), nil
}

// SetInstallations sets the organizations the App is installed on.
func (g *GitHub) SetInstallations(orgs ...fleet.Org) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.installs = orgs
}

// InstallationReads counts Installations calls, failed ones included.
func (g *GitHub) InstallationReads() int { g.mu.Lock(); defer g.mu.Unlock(); return g.installReads }

// FailInstallations makes the next n Installations calls fail.
func (g *GitHub) FailInstallations(n int) { g.mu.Lock(); defer g.mu.Unlock(); g.failInstalls = n }

// SetJob sets what GitHub says of a job.
func (g *GitHub) SetJob(id int64, st fleet.JobStatus) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.jobs[id] = st
}

// JobReads counts WorkflowJob calls, failed ones included.
func (g *GitHub) JobReads() int { g.mu.Lock(); defer g.mu.Unlock(); return g.jobReads }

// FailJobReads makes the next n WorkflowJob calls fail.
func (g *GitHub) FailJobReads(n int) { g.mu.Lock(); defer g.mu.Unlock(); g.failJobReads = n }

// Set changes the named runner's record, as GitHub's view changing would.
func (g *GitHub) Set(name string, fn func(*GitHubRunner)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, r := range g.runners {
		if r.Name == name {
			fn(r)
		}
	}
}

// Add puts a runner record with this id, as if registered by other means.
func (g *GitHub) Add(id int64, r GitHubRunner) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.runners[id] = &r
	g.next = max(g.next, id)
}

// Names returns the names of the runner records, sorted.
func (g *GitHub) Names() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, r := range g.runners {
		out = append(out, r.Name)
	}
	sort.Strings(out)
	return out
}

// Records returns the runner records by name.
func (g *GitHub) Records() map[string]GitHubRunner {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]GitHubRunner, len(g.runners))
	for _, r := range g.runners {
		out[r.Name] = *r
	}
	return out
}

// JITCalls counts GenerateJITConfig calls, failed ones included.
func (g *GitHub) JITCalls() int { g.mu.Lock(); defer g.mu.Unlock(); return g.jitCalls }

// Removes counts the records RemoveRunner removed.
func (g *GitHub) Removes() int { g.mu.Lock(); defer g.mu.Unlock(); return g.removes }

// FailJIT makes the next n JIT config requests fail.
func (g *GitHub) FailJIT(n int) { g.mu.Lock(); defer g.mu.Unlock(); g.failJIT = n }

// BusyOnCreate makes every new runner online and busy at once, as if it
// took a job before anyone asked.
func (g *GitHub) BusyOnCreate(on bool) { g.mu.Lock(); defer g.mu.Unlock(); g.busyOnCreate = on }
