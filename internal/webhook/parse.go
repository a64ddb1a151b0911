package webhook

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// parse turns a verified workflow_job body into the fields we store, and
// the time of the event it reports (zero when the payload has none). It
// rejects what the scheduler could not act on; it never panics on odd input.
func parse(body []byte) (fleet.Delivery, time.Time, error) {
	ev, err := github.ParseWebHook("workflow_job", body)
	if err != nil {
		return fleet.Delivery{}, time.Time{}, fmt.Errorf("invalid JSON: %w", err)
	}
	e, ok := ev.(*github.WorkflowJobEvent)
	if !ok {
		return fleet.Delivery{}, time.Time{}, errors.New("not a workflow_job payload")
	}
	job := e.GetWorkflowJob()
	switch {
	case e.GetAction() == "":
		return fleet.Delivery{}, time.Time{}, errors.New("missing action")
	case job == nil || job.GetID() == 0:
		return fleet.Delivery{}, time.Time{}, errors.New("missing workflow_job.id")
	case e.GetInstallation().GetID() == 0:
		return fleet.Delivery{}, time.Time{}, errors.New("missing installation.id")
	}
	repo := e.GetRepo()
	// visibility is "public", "private" or "internal"; older payloads only
	// say private: false. Either way, treat a repository as public unless
	// it is known not to be.
	public := repo.GetVisibility() == "public" || (repo.GetVisibility() == "" && !repo.GetPrivate())
	return fleet.Delivery{
		Action:         fleet.Action(e.GetAction()),
		JobID:          job.GetID(),
		RunID:          job.GetRunID(),
		InstallationID: e.GetInstallation().GetID(),
		Org:            e.GetOrg().GetLogin(),
		Repo:           repo.GetFullName(),
		Public:         public,
		Labels:         job.Labels,
		RunnerName:     job.GetRunnerName(),
		Conclusion:     job.GetConclusion(),
	}, eventTime(job), nil
}

// eventTime is when the event a workflow_job delivery reports happened,
// by the job's own timestamps, which the signature covers (the delivery
// id is not): created_at for queued, started_at for in_progress,
// completed_at for completed. Each is later than the ones before it, so
// the latest the payload holds is the one that applies.
func eventTime(job *github.WorkflowJob) time.Time {
	var at time.Time
	for _, t := range []time.Time{job.GetCreatedAt().Time, job.GetStartedAt().Time, job.GetCompletedAt().Time} {
		if t.After(at) {
			at = t
		}
	}
	return at
}
