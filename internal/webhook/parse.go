package webhook

import (
	"errors"
	"fmt"
	"strings"
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

// parseInstallation turns a verified installation body into what the
// scheduler keeps of it; ok is false for what it does not keep: an action
// other than created, deleted, suspend and unsuspend, or an account that
// is not an organization (runners are an organization's).
func parseInstallation(body []byte) (in fleet.Installation, ok bool, err error) {
	ev, err := github.ParseWebHook("installation", body)
	if err != nil {
		return in, false, fmt.Errorf("invalid JSON: %w", err)
	}
	e, isInstall := ev.(*github.InstallationEvent)
	if !isInstall {
		return in, false, errors.New("not an installation payload")
	}
	inst := e.GetInstallation()
	if inst.GetID() == 0 {
		return in, false, errors.New("missing installation.id")
	}
	switch e.GetAction() {
	case "created", "unsuspend":
		in.State = fleet.InstallationActive
	case "deleted":
		in.State = fleet.InstallationDeleted
	case "suspend":
		in.State = fleet.InstallationSuspended
	case "":
		return in, false, errors.New("missing action")
	default:
		return in, false, nil
	}
	acct := inst.GetAccount()
	if !strings.EqualFold(acct.GetType(), "Organization") || acct.GetLogin() == "" {
		return in, false, nil
	}
	in.ID, in.Login = inst.GetID(), acct.GetLogin()
	return in, true, nil
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
