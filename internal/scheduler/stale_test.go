package scheduler

import (
	"strings"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
)

// A queued job that waited past RecheckQueuedAfter is asked about at
// GitHub, once, before its launch. A replayed old queued delivery (its row
// long deleted by retention) must not hold a runner for good: the job
// GitHub has moved on is closed instead, with a timeline step saying why.
func TestLongQueuedJobCheckedAtGitHubBeforeItsLaunch(t *testing.T) {
	for _, tc := range []struct {
		name      string
		github    fleet.JobStatus
		fail      bool
		launched  bool
		state     fleet.JobState
		timeline  string
		runner    string
		jobReason string
	}{
		{name: "completed at GitHub", github: fleet.JobStatus{Status: "completed", Conclusion: "success"},
			state: fleet.JobCompleted, timeline: "queued accepted launched closed",
			jobReason: "completed at GitHub while queued here"},
		{name: "in progress at GitHub", github: fleet.JobStatus{Status: "in_progress", RunnerName: "elsewhere-1"},
			state: fleet.JobInProgress, timeline: "queued accepted launched closed", runner: "elsewhere-1",
			jobReason: "in progress at GitHub while queued here"},
		{name: "still queued at GitHub", github: fleet.JobStatus{Status: "queued"},
			launched: true, state: fleet.JobQueued, timeline: "queued accepted launched runner_started"},
		{name: "waiting at GitHub", github: fleet.JobStatus{Status: "waiting"},
			launched: true, state: fleet.JobQueued, timeline: "queued accepted launched runner_started"},
		{name: "GitHub errs", fail: true,
			launched: true, state: fleet.JobQueued, timeline: "queued accepted launched runner_started"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxInstances = 1
			e := newEnv(t, cfg)
			// Job 1 holds the only slot while job 2, a replay, waits.
			e.deliver(fleet.ActionQueued, 1, "")
			e.settle()
			busy := e.runnersIn(fleet.RunnerStarted)[0]
			e.deliver(fleet.ActionInProgress, 1, busy.Name)
			e.deliver(fleet.ActionQueued, 2, "")
			e.settle()
			e.gh.SetJob(2, tc.github)
			if tc.fail {
				e.gh.FailJobReads(1)
			}
			e.clock.Advance(DefaultRecheckQueuedAfter + time.Second)
			e.settle()
			if n := e.gh.JobReads(); n != 0 {
				t.Fatalf("%d job reads while no launch was due, want 0", n)
			}
			e.deliver(fleet.ActionCompleted, 1, busy.Name) // the slot frees
			e.settle()

			if n := e.gh.JobReads(); n != 1 {
				t.Fatalf("%d job reads, want 1", n)
			}
			if got := e.gh.JITCalls() == 2; got != tc.launched {
				t.Fatalf("JIT calls = %d; launched = %v, want %v", e.gh.JITCalls(), got, tc.launched)
			}
			if got := e.lxd.Creates() == 2; got != tc.launched {
				t.Fatalf("creates = %d; launched = %v, want %v", e.lxd.Creates(), got, tc.launched)
			}
			j := e.job(2)
			if j.State != tc.state || j.Reason != tc.jobReason || j.RunnerName != tc.runner {
				t.Fatalf("job 2: %+v", j)
			}
			if got := e.timeline(2); got != tc.timeline {
				t.Fatalf("timeline %q, want %q", got, tc.timeline)
			}
			if !tc.launched {
				evs := e.events(2)
				last := evs[len(evs)-1].Detail
				if !strings.Contains(last, "queued here for 10m1s, but") || !strings.Contains(last, "at GitHub: closed without a launch") {
					t.Fatalf("closing step: %q", last)
				}
				var dropped []fleet.Runner
				for _, r := range e.runnersIn(fleet.RunnerDeleted) {
					if r.JobID == 2 {
						dropped = append(dropped, r)
					}
				}
				if len(dropped) != 1 || dropped[0].RunnerID != 0 || !strings.Contains(dropped[0].Reason, "not launched") {
					t.Fatalf("the runner of job 2: %+v", dropped)
				}
				// Nothing waits any more: no launch comes later.
				e.clock.Advance(time.Hour)
				e.settle()
				if e.gh.JITCalls() != 1 || e.lxd.Count() != 0 {
					t.Fatalf("after closing: %d JIT calls, %d instances", e.gh.JITCalls(), e.lxd.Count())
				}
			}
		})
	}
}

// Fresh jobs pay no extra GitHub read.
func TestFreshJobsLaunchWithoutARecheck(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(fleet.ActionQueued, 1, "")
	e.settle()
	e.clock.Advance(DefaultRecheckQueuedAfter - time.Minute)
	e.deliver(fleet.ActionQueued, 2, "")
	e.settle()
	if e.gh.JITCalls() != 2 || e.gh.JobReads() != 0 {
		t.Fatalf("%d launches, %d job reads; want 2 and none", e.gh.JITCalls(), e.gh.JobReads())
	}
}

// A replay that finds a free slot gets a runner at once, which waits idle
// (GitHub gives it no job): when max_idle_age recycles it, the relaunch
// asks GitHub and closes the job.
func TestReplayedJobWithAFreeSlotClosedAtItsRelaunch(t *testing.T) {
	e := newEnv(t, testConfig())
	e.gh.SetJob(2, fleet.JobStatus{Status: "completed", Conclusion: "success"})
	e.deliver(fleet.ActionQueued, 2, "")
	e.settle()
	r := e.runnersIn(fleet.RunnerStarted)[0]
	e.gh.Set(r.Name, func(g *fleettest.GitHubRunner) { g.Online = true })
	e.clock.Advance(DefaultMaxIdleAge)
	e.settle()
	if j := e.job(2); j.State != fleet.JobCompleted || e.gh.JobReads() != 1 || e.gh.JITCalls() != 1 || e.lxd.Count() != 0 {
		t.Fatalf("job %+v; %d job reads, %d JIT calls, %d instances", j, e.gh.JobReads(), e.gh.JITCalls(), e.lxd.Count())
	}
}
