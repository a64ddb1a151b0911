package ghapp

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/go-github/v62/github"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// WorkflowJob returns GitHub's view of a workflow job of repo
// ("owner/name"), or an error wrapping fleet.ErrNotFound when GitHub has
// no such job there (or the App may not see it).
func (c *Client) WorkflowJob(ctx context.Context, installationID int64, repo string, jobID int64) (fleet.JobStatus, error) {
	owner, name, ok := strings.Cut(repo, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return fleet.JobStatus{}, fmt.Errorf("get job %d: repository %q: want owner/name", jobID, repo)
	}
	if err := checkTarget(installationID, owner); err != nil {
		return fleet.JobStatus{}, fmt.Errorf("get job %d: %w", jobID, err)
	}
	var j *github.WorkflowJob
	err := c.call(ctx, "get job", installationID, true, func(ctx context.Context, gh *github.Client) (*github.Response, error) {
		var resp *github.Response
		var err error
		j, resp, err = gh.Actions.GetWorkflowJobByID(ctx, owner, name, jobID)
		return resp, err
	})
	if statusOf(err) == http.StatusNotFound {
		return fleet.JobStatus{}, fmt.Errorf("job %d of %s: %w", jobID, repo, fleet.ErrNotFound)
	}
	if err != nil {
		return fleet.JobStatus{}, fmt.Errorf("get job %d of %s: %w", jobID, repo, err)
	}
	return fleet.JobStatus{Status: j.GetStatus(), Conclusion: j.GetConclusion(), RunnerName: j.GetRunnerName()}, nil
}
