package leader

import (
	"context"
	"crypto/rand"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

var randRead = rand.Read

// Guard returns a context for one outside call that ends before the lease
// could lapse, or fleet.ErrNotLeader when this replica does not lead: for
// outside calls of the leader's other than through Instances and GitHub.
func (e *Elector) Guard(ctx context.Context) (context.Context, context.CancelFunc, error) {
	return e.guard(ctx)
}

// Task guards a task that runs for the whole term, such as the image
// rebuilds (a build takes minutes and makes many requests): its context
// ends with the term and carries the permit, so each of its requests is
// refused once the lease may have lapsed, as a call through Instances is.
// Outside a term the task does not run.
func (e *Elector) Task(task func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel, err := e.guard(ctx)
		defer cancel()
		if err != nil {
			return nil // the term is over already
		}
		return task(ctx)
	}
}

// Instances guards inner: each call is made only while this replica leads
// and never outlives the lease.
func (e *Elector) Instances(inner fleet.Instances) fleet.Instances { return guardedInstances{e, inner} }

// GitHub guards inner likewise.
func (e *Elector) GitHub(inner fleet.GitHub) fleet.GitHub { return guardedGitHub{e, inner} }

type guardedInstances struct {
	e     *Elector
	inner fleet.Instances
}

func (g guardedInstances) Create(ctx context.Context, spec fleet.InstanceSpec) error {
	ctx, cancel, err := g.e.guard(ctx)
	defer cancel()
	if err != nil {
		return err
	}
	return g.inner.Create(ctx, spec)
}

func (g guardedInstances) Delete(ctx context.Context, name string) error {
	ctx, cancel, err := g.e.guard(ctx)
	defer cancel()
	if err != nil {
		return err
	}
	return g.inner.Delete(ctx, name)
}

func (g guardedInstances) List(ctx context.Context) ([]fleet.Instance, error) {
	ctx, cancel, err := g.e.guard(ctx)
	defer cancel()
	if err != nil {
		return nil, err
	}
	return g.inner.List(ctx)
}

func (g guardedInstances) Get(ctx context.Context, name string) (fleet.Instance, error) {
	ctx, cancel, err := g.e.guard(ctx)
	defer cancel()
	if err != nil {
		return fleet.Instance{}, err
	}
	return g.inner.Get(ctx, name)
}

type guardedGitHub struct {
	e     *Elector
	inner fleet.GitHub
}

func (g guardedGitHub) GenerateJITConfig(ctx context.Context, req fleet.JITRequest) (fleet.JITRunner, error) {
	ctx, cancel, err := g.e.guard(ctx)
	defer cancel()
	if err != nil {
		return fleet.JITRunner{}, err
	}
	return g.inner.GenerateJITConfig(ctx, req)
}

func (g guardedGitHub) Runner(ctx context.Context, installationID int64, org string, runnerID int64) (fleet.RunnerStatus, error) {
	ctx, cancel, err := g.e.guard(ctx)
	defer cancel()
	if err != nil {
		return fleet.RunnerStatus{}, err
	}
	return g.inner.Runner(ctx, installationID, org, runnerID)
}

func (g guardedGitHub) RemoveRunner(ctx context.Context, installationID int64, org string, runnerID int64) error {
	ctx, cancel, err := g.e.guard(ctx)
	defer cancel()
	if err != nil {
		return err
	}
	return g.inner.RemoveRunner(ctx, installationID, org, runnerID)
}

func (g guardedGitHub) WorkflowJob(ctx context.Context, installationID int64, repo string, jobID int64) (fleet.JobStatus, error) {
	ctx, cancel, err := g.e.guard(ctx)
	defer cancel()
	if err != nil {
		return fleet.JobStatus{}, err
	}
	return g.inner.WorkflowJob(ctx, installationID, repo, jobID)
}

func (g guardedGitHub) ListRunners(ctx context.Context, installationID int64, org string) ([]fleet.RunnerStatus, error) {
	ctx, cancel, err := g.e.guard(ctx)
	defer cancel()
	if err != nil {
		return nil, err
	}
	return g.inner.ListRunners(ctx, installationID, org)
}

func (g guardedInstances) Prepare(ctx context.Context, spec fleet.InstanceSpec) error {
	ctx, cancel, err := g.e.guard(ctx)
	defer cancel()
	if err != nil {
		return err
	}
	return g.inner.Prepare(ctx, spec)
}

func (g guardedInstances) StartPrepared(ctx context.Context, name string, labels fleet.InstanceLabels, jit fleet.Secret) error {
	ctx, cancel, err := g.e.guard(ctx)
	defer cancel()
	if err != nil {
		return err
	}
	return g.inner.StartPrepared(ctx, name, labels, jit)
}

func (g guardedInstances) ImageFingerprint(ctx context.Context, image string) (string, error) {
	ctx, cancel, err := g.e.guard(ctx)
	defer cancel()
	if err != nil {
		return "", err
	}
	return g.inner.ImageFingerprint(ctx, image)
}

func (g guardedGitHub) Installations(ctx context.Context) ([]fleet.Org, error) {
	ctx, cancel, err := g.e.guard(ctx)
	defer cancel()
	if err != nil {
		return nil, err
	}
	return g.inner.Installations(ctx)
}

// Cluster guards inner likewise: reading LXD's members is a call too.
func (e *Elector) Cluster(inner fleet.Cluster) fleet.Cluster { return guardedCluster{e, inner} }

type guardedCluster struct {
	e     *Elector
	inner fleet.Cluster
}

func (g guardedCluster) Topology(ctx context.Context) (fleet.Topology, error) {
	ctx, cancel, err := g.e.guard(ctx)
	defer cancel()
	if err != nil {
		return fleet.Topology{}, err
	}
	return g.inner.Topology(ctx)
}

func (g guardedCluster) Architecture(ctx context.Context, arch, image, sourceInstance string) (string, error) {
	ctx, cancel, err := g.e.guard(ctx)
	defer cancel()
	if err != nil {
		return "", err
	}
	return g.inner.Architecture(ctx, arch, image, sourceInstance)
}
