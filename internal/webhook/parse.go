package webhook

import (
	"errors"
	"fmt"

	"github.com/google/go-github/v62/github"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// parse turns a verified workflow_job body into the fields we store. It
// rejects what the scheduler could not act on; it never panics on odd input.
func parse(body []byte) (fleet.Delivery, error) {
	ev, err := github.ParseWebHook("workflow_job", body)
	if err != nil {
		return fleet.Delivery{}, fmt.Errorf("invalid JSON: %w", err)
	}
	e, ok := ev.(*github.WorkflowJobEvent)
	if !ok {
		return fleet.Delivery{}, errors.New("not a workflow_job payload")
	}
	job := e.GetWorkflowJob()
	switch {
	case e.GetAction() == "":
		return fleet.Delivery{}, errors.New("missing action")
	case job == nil || job.GetID() == 0:
		return fleet.Delivery{}, errors.New("missing workflow_job.id")
	case e.GetInstallation().GetID() == 0:
		return fleet.Delivery{}, errors.New("missing installation.id")
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
	}, nil
}
