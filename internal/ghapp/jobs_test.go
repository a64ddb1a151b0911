package ghapp

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake/ghfaketest"
)

// A job's status through its life, as the scheduler asks before launching
// for a job that waited long: queued, in progress on a runner, completed.
func TestWorkflowJob(t *testing.T) {
	e := newEnv(t, nil, nil)
	id := e.fake.QueueJob(ghfake.JobSpec{Labels: []string{"linux"}, Repo: "acme/app", Duration: time.Hour})
	st, err := e.c.WorkflowJob(ctx(t), instID, "acme/app", id)
	if err != nil || st != (fleet.JobStatus{Status: "queued"}) || st.Moved() {
		t.Fatalf("queued: %+v %v", st, err)
	}

	r := e.jit("taker", "linux")
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ghfake.RunRunner(rctx, ghfake.RunnerOptions{DevLXDSocket: ghfaketest.DevLXD(t, r.Config.Reveal())})
	}()
	defer func() { cancel(); <-done }()
	if _, err := e.fake.WaitJob(ctx(t), id, func(j ghfake.JobView) bool { return j.Status == ghfake.StatusInProgress }); err != nil {
		t.Fatal(err)
	}
	st, err = e.c.WorkflowJob(ctx(t), instID, "acme/app", id)
	if err != nil || st.Status != "in_progress" || st.RunnerName != "taker" || !st.Moved() {
		t.Fatalf("in progress: %+v %v", st, err)
	}

	if err := e.fake.CancelJob(id); err != nil {
		t.Fatal(err)
	}
	st, err = e.c.WorkflowJob(ctx(t), instID, "acme/app", id)
	if err != nil || st.Status != "completed" || st.Conclusion != "cancelled" || !st.Moved() {
		t.Fatalf("completed: %+v %v", st, err)
	}

	// Another repository's job, or none at all: not found, and not retried.
	before := e.fake.Requests()["GET /repos/{owner}/{repo}/actions/jobs/{id}"]
	for _, repo := range []string{"acme/other", "acme/app"} {
		jobID := id
		if repo == "acme/app" {
			jobID = 1
		}
		if _, err := e.c.WorkflowJob(ctx(t), instID, repo, jobID); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("%s job %d: %v, want ErrNotFound", repo, jobID, err)
		}
	}
	if n := e.fake.Requests()["GET /repos/{owner}/{repo}/actions/jobs/{id}"] - before; n != 2 {
		t.Fatalf("%d requests for two missing jobs, want 2", n)
	}
	for _, repo := range []string{"app", "/app", "acme/", "acme/app/x"} {
		if _, err := e.c.WorkflowJob(ctx(t), instID, repo, id); err == nil {
			t.Errorf("repository %q: no error", repo)
		}
	}
}
