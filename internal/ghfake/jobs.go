package ghfake

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Job statuses and conclusions, as in GitHub's workflow_job payloads.
const (
	StatusQueued     = "queued"
	StatusInProgress = "in_progress"
	StatusCompleted  = "completed"

	ConclusionSuccess   = "success"
	ConclusionCancelled = "cancelled"
	ConclusionFailure   = "failure" // e.g. the runner lost communication
)

// Why a runner was told to stop (the state its long poll reports).
const (
	stopCancelled = "cancelled" // its job was cancelled
	stopRemoved   = "removed"   // its record was deleted through the API
	stopDone      = "done"      // it completed its job
)

// JobSpec describes a job to queue.
type JobSpec struct {
	Labels   []string      // runs-on labels; default ["self-hosted"]
	Repo     string        // "org/repo"; default "<org>/repo"
	Public   bool          // public repository
	Duration time.Duration // how long the job "runs" on a fake runner
	Name     string        // job name; default "build"
	Workflow string        // workflow name; default "CI"
}

// JobView is a snapshot of one job.
type JobView struct {
	ID          int64
	RunID       int64
	Repo        string
	Labels      []string
	Status      string // queued, in_progress, completed
	Conclusion  string // "", success, cancelled
	RunnerID    int64
	RunnerName  string
	CreatedAt   time.Time
	StartedAt   time.Time // when a runner picked it up
	CompletedAt time.Time
}

// RunnerView is a snapshot of one registered runner.
type RunnerView struct {
	ID        int64
	Org       string // the organization it registered in
	Name      string
	Labels    []string
	GroupID   int64
	Status    string // online, offline
	Busy      bool
	JobID     int64 // job being run, if any
	Used      bool  // JIT config consumed by a fake runner
	Hung      bool  // told to hang by HangRunners
	CreatedAt time.Time
}

type job struct {
	id, runID   int64
	org         string // the repository's owner
	repo        string
	repoID      int64
	public      bool
	name        string
	workflow    string
	labels      []string
	duration    time.Duration
	status      string
	conclusion  string
	runner      *runner // set once assigned
	createdAt   time.Time
	startedAt   time.Time
	completedAt time.Time
}

type runner struct {
	id        int64
	org       string // the organization it registered in
	name      string
	labels    []string
	group     *runnerGroup // its settings may change after it registered
	os        string
	secret    string
	createdAt time.Time
	used      bool // JIT config consumed
	hung      bool
	connected bool
	polling   int // long polls in flight
	lastSeen  time.Time
	removed   bool
	stop      string // why it must stop; "" while it may run
	job       *job
	version   int64 // bumped on every change its fake runner must see
	wake      chan struct{}
}

func (r *runner) busy() bool { return r.job != nil && r.job.status == StatusInProgress }

func (r *runner) bumpLocked() {
	r.version++
	close(r.wake)
	r.wake = make(chan struct{})
}

func (s *Server) statusLocked(r *runner, now time.Time) string {
	if r.connected && !r.removed && (r.polling > 0 || now.Sub(r.lastSeen) < s.offlineAfter) {
		return "online"
	}
	return "offline"
}

// QueueJob creates a queued job, sends its "queued" webhook and assigns it
// if an idle runner already matches. It returns the job id.
func (s *Server) QueueJob(spec JobSpec) int64 {
	labels := append([]string(nil), spec.Labels...)
	if len(labels) == 0 {
		labels = []string{"self-hosted"}
	}
	if spec.Repo == "" {
		spec.Repo = s.opts.Org + "/repo"
	}
	if spec.Name == "" {
		spec.Name = "build"
	}
	if spec.Workflow == "" {
		spec.Workflow = "CI"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	repoID, ok := s.repoIDs[spec.Repo]
	if !ok {
		s.next.repo++
		repoID = s.next.repo
		s.repoIDs[spec.Repo] = repoID
	}
	s.repoPublic[spec.Repo] = spec.Public
	s.next.job++
	s.next.run++
	now := time.Now()
	org, _, ok := strings.Cut(spec.Repo, "/")
	if !ok {
		org = s.opts.Org
	}
	j := &job{
		id: s.next.job, runID: s.next.run, org: org, repo: spec.Repo, repoID: repoID, public: spec.Public,
		name: spec.Name, workflow: spec.Workflow, labels: labels, duration: spec.Duration,
		status: StatusQueued, createdAt: now,
	}
	s.jobs = append(s.jobs, j)
	s.jobsByID[j.id] = j
	s.log.Info().Int64("job_id", j.id).Strs("labels", labels).Str("repo", j.repo).Msg("job queued")
	s.enqueueJobEventLocked(j, "queued")
	s.dispatchLocked()
	s.notifyLocked()
	return j.id
}

// ErrJobCompleted is returned by CancelJob for a job that already completed.
var ErrJobCompleted = errors.New("job already completed")

// CancelJob cancels a job: a queued one completes as cancelled with no
// runner; a running one completes as cancelled and its runner is told to
// stop (and, being single-use, is removed).
func (s *Server) CancelJob(id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobsByID[id]
	if j == nil {
		return fmt.Errorf("ghfake: job %d: not found", id)
	}
	if j.status == StatusCompleted {
		return fmt.Errorf("ghfake: job %d: %w", id, ErrJobCompleted)
	}
	j.status, j.conclusion, j.completedAt = StatusCompleted, ConclusionCancelled, time.Now()
	if j.runner != nil {
		s.removeRunnerLocked(j.runner, stopCancelled)
	}
	s.log.Info().Int64("job_id", id).Msg("job cancelled")
	s.enqueueJobEventLocked(j, "completed")
	s.notifyLocked()
	return nil
}

// dispatchLocked gives queued jobs, oldest first, to idle runners whose
// labels cover theirs. Like GitHub, any matching runner takes any job: the
// runner launched for job A may well run job B.
func (s *Server) dispatchLocked() {
	var idle []*runner
	for _, r := range s.sortedRunnersLocked() {
		// Only a runner with a poll in flight can receive a job, as with
		// the real message queue.
		if r.connected && !r.removed && r.stop == "" && r.job == nil && r.polling > 0 {
			idle = append(idle, r)
		}
	}
	for _, j := range s.jobs {
		if len(idle) == 0 {
			return
		}
		if j.status != StatusQueued {
			continue
		}
		for i, r := range idle {
			// The runner's group must admit the job's repository, and the
			// runner be of the job's organization.
			if labelsCover(r.labels, j.labels) && r.group.admits(j.repo, j.public) && strings.EqualFold(r.org, j.org) {
				s.assignLocked(j, r)
				idle = append(idle[:i], idle[i+1:]...)
				break
			}
		}
	}
}

func labelsCover(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if strings.EqualFold(h, w) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (s *Server) assignLocked(j *job, r *runner) {
	j.status, j.runner, j.startedAt = StatusInProgress, r, time.Now()
	r.job = j
	r.bumpLocked()
	s.log.Info().Int64("job_id", j.id).Int64("runner_id", r.id).Str("runner_name", r.name).Msg("job assigned")
	s.enqueueJobEventLocked(j, "in_progress")
	s.notifyLocked()
}

func (s *Server) removeRunnerLocked(r *runner, why string) {
	delete(s.runners, r.id)
	r.removed = true
	if r.stop == "" {
		r.stop = why
	}
	r.bumpLocked()
	s.notifyLocked()
}

func (s *Server) jobViewLocked(j *job) JobView {
	v := JobView{
		ID: j.id, RunID: j.runID, Repo: j.repo, Labels: append([]string(nil), j.labels...),
		Status: j.status, Conclusion: j.conclusion,
		CreatedAt: j.createdAt, StartedAt: j.startedAt, CompletedAt: j.completedAt,
	}
	if j.runner != nil {
		v.RunnerID, v.RunnerName = j.runner.id, j.runner.name
	}
	return v
}

func (s *Server) jobViewsLocked() []JobView {
	out := make([]JobView, 0, len(s.jobs))
	for _, j := range s.jobs {
		out = append(out, s.jobViewLocked(j))
	}
	return out
}

// Jobs returns all jobs in creation order.
func (s *Server) Jobs() []JobView {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jobViewsLocked()
}

// Job returns one job.
func (s *Server) Job(id int64) (JobView, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobsByID[id]
	if j == nil {
		return JobView{}, false
	}
	return s.jobViewLocked(j), true
}

func (s *Server) runnerViewsLocked() []RunnerView {
	now := time.Now()
	var out []RunnerView
	for _, r := range s.sortedRunnersLocked() {
		v := RunnerView{
			ID: r.id, Org: r.org, Name: r.name, Labels: append([]string(nil), r.labels...), GroupID: r.group.id,
			Status: s.statusLocked(r, now), Busy: r.busy(), Used: r.used, Hung: r.hung, CreatedAt: r.createdAt,
		}
		if r.job != nil {
			v.JobID = r.job.id
		}
		out = append(out, v)
	}
	return out
}

// Runners returns the registered (not yet removed) runners by id.
func (s *Server) Runners() []RunnerView {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runnerViewsLocked()
}

// WaitJobs blocks until cond holds for the jobs (in creation order) or ctx
// ends.
func (s *Server) WaitJobs(ctx context.Context, cond func([]JobView) bool) error {
	_, err := waitFor(ctx, s, s.jobViewsLocked, cond)
	return err
}

// WaitJob blocks until cond holds for job id and returns that snapshot.
func (s *Server) WaitJob(ctx context.Context, id int64, cond func(JobView) bool) (JobView, error) {
	type snap struct {
		v  JobView
		ok bool
	}
	got, err := waitFor(ctx, s, func() snap {
		if j := s.jobsByID[id]; j != nil {
			return snap{s.jobViewLocked(j), true}
		}
		return snap{}
	}, func(v snap) bool { return v.ok && cond(v.v) })
	return got.v, err
}

// WaitRunners blocks until cond holds for the registered runners.
func (s *Server) WaitRunners(ctx context.Context, cond func([]RunnerView) bool) error {
	_, err := waitFor(ctx, s, s.runnerViewsLocked, cond)
	return err
}
