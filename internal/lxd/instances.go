package lxd

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	lxdclient "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared/api"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

var _ fleet.Instances = (*Client)(nil)

// cleanupTimeout bounds the clean-up done after a failed or cancelled call,
// which runs on a fresh context because the caller's may be spent.
const cleanupTimeout = 30 * time.Second

// Create creates spec as an ephemeral instance and starts it, with its
// labels and fleet.KeyManaged set, and fleet.KeyJITConfig holding
// spec.JITConfig. A copy (spec.SourceInstance) takes the source's config,
// devices and, when spec.Profiles is nil, profiles, but none of its
// snapshots or labels. When the start fails the instance is deleted again.
// A missing image or source instance gives an error that matches
// fleet.ErrNotFound. Errors never contain the JIT config.
func (c *Client) Create(ctx context.Context, spec fleet.InstanceSpec) (err error) {
	defer func() { err = classify(redact(err, spec.JITConfig.Reveal())) }()
	return c.create(ctx, spec, true)
}

// Prepare creates spec as an ephemeral instance and leaves it stopped,
// with its labels and fleet.KeyManaged set and no JIT config: a prepared
// instance, which StartPrepared gives its runner later. A stopped
// ephemeral instance stays until it is deleted: LXD deletes one when it
// stops, not when it was never started.
func (c *Client) Prepare(ctx context.Context, spec fleet.InstanceSpec) (err error) {
	if spec.JITConfig != "" {
		return fmt.Errorf("prepare instance %s: a prepared instance holds no JIT config", spec.Name)
	}
	defer func() { err = classify(err) }()
	return c.create(ctx, spec, false)
}

// create creates spec and, when start is set, starts it.
func (c *Client) create(ctx context.Context, spec fleet.InstanceSpec, start bool) (err error) {
	if err := checkSpec(spec); err != nil {
		return fmt.Errorf("create instance %s: %w", spec.Name, err)
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	// One address for the whole create: when it stops answering, the
	// caller learns ErrUnreachable, and the client has moved on for the
	// next call (the scheduler then asks what became of the instance).
	ep := c.current()
	defer func() { c.observe(ep, err) }()
	s := ep.server(ctx, c.project, spec.Target)

	req := api.InstancesPost{
		Name: spec.Name,
		Type: api.InstanceType(spec.Type),
		InstancePut: api.InstancePut{
			Architecture: spec.Architecture,
			Config:       instanceConfig(spec),
			Profiles:     spec.Profiles,
			Ephemeral:    true,
		},
	}
	if spec.Image != "" {
		fp, err := resolveImage(s, spec.Image)
		if err != nil {
			return fmt.Errorf("create instance %s: %w", spec.Name, err)
		}
		req.Source = api.InstanceSource{Type: api.SourceTypeImage, Fingerprint: fp}
	} else {
		src, _, err := s.GetInstance(spec.SourceInstance)
		if err != nil {
			return fmt.Errorf("create instance %s: source instance %s: %w", spec.Name, spec.SourceInstance, notFound(err))
		}
		// Like `lxc copy`: the copy keeps the source's profiles unless told otherwise.
		if req.Profiles == nil {
			req.Profiles = src.Profiles
		}
		req.Source = api.InstanceSource{Type: api.SourceTypeCopy, Source: spec.SourceInstance, InstanceOnly: true}
	}

	op, err := s.CreateInstance(req)
	if err != nil {
		// Refused before anything was made (bad profile, bad config, ...).
		// A taken name is only reported by the operation.
		return fmt.Errorf("create instance %s: %w", spec.Name, err)
	}
	if err := c.wait(ctx, op); err != nil {
		err = fmt.Errorf("create instance %s: %w", spec.Name, err)
		// A create that fails in its operation is rolled back by LXD, but one
		// we stopped waiting for may still finish: remove it, if it is ours
		// (LXD accepts a taken name and fails only in the operation).
		if ctx.Err() != nil {
			err = errors.Join(err, c.cleanupIfOurs(ctx, spec.Name, req.Config))
		}
		return err
	}
	if !start {
		return nil
	}
	return c.start(ctx, s, spec.Name)
}

// start starts name; when the start fails the instance is deleted.
func (c *Client) start(ctx context.Context, s lxdclient.InstanceServer, name string) error {
	op, err := s.UpdateInstanceState(name, api.InstanceStatePut{Action: "start", Timeout: -1}, "")
	if err == nil {
		err = c.wait(ctx, op)
	}
	if err != nil {
		return errors.Join(fmt.Errorf("start instance %s: %w", name, err), c.cleanup(ctx, name))
	}
	return nil
}

// StartPrepared gives the prepared instance name its labels and JIT
// config, then starts it: the JIT config is set while it is stopped, so
// the runner reads it from its first moment. It refuses an instance that
// is not a stopped one of labels.Owner's. When the start fails the
// instance is deleted. Errors never contain the JIT config.
func (c *Client) StartPrepared(ctx context.Context, name string, labels fleet.InstanceLabels, jit fleet.Secret) (err error) {
	defer func() { err = classify(redact(err, jit.Reveal())) }()
	ctx, cancel := c.call(ctx)
	defer cancel()
	ep := c.current()
	defer func() { c.observe(ep, err) }()
	s := ep.server(ctx, c.project, "")
	inst, etag, err := s.GetInstance(name)
	if err != nil {
		return fmt.Errorf("start prepared instance %s: %w", name, notFound(err))
	}
	if got := toInstance(*inst); !got.Managed || got.Labels.Owner != labels.Owner || inst.StatusCode != api.Stopped {
		return fmt.Errorf("start prepared instance %s: not a stopped prepared instance of %q (owner %q, %s)",
			name, labels.Owner, got.Labels.Owner, inst.Status)
	}
	put := inst.Writable()
	setLabels(put.Config, labels, jit)
	op, err := s.UpdateInstance(name, put, etag)
	if err == nil {
		err = c.wait(ctx, op)
	}
	if err != nil {
		// Nothing ran with the config: the instance is as good as before,
		// but holds it; it goes.
		return errors.Join(fmt.Errorf("set runner of prepared instance %s: %w", name, err), c.cleanup(ctx, name))
	}
	return c.start(ctx, s, name)
}

// ImageFingerprint returns the fingerprint image (an alias, or a
// fingerprint or its prefix) stands for now.
func (c *Client) ImageFingerprint(ctx context.Context, image string) (string, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	var fp string
	err := c.read(ctx, func(s lxdclient.InstanceServer) (err error) {
		fp, err = resolveImage(s, image)
		return err
	})
	return fp, classify(err)
}

// cleanup deletes name on a fresh context, since ctx may be the reason the
// call failed.
func (c *Client) cleanup(ctx context.Context, name string) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := c.Delete(cctx, name); err != nil {
		return fmt.Errorf("clean up: %w", err)
	}
	return nil
}

// cleanupIfOurs deletes name if its config carries the values we just
// asked for, so that a same-named instance of someone else survives.
func (c *Client) cleanupIfOurs(ctx context.Context, name string, cfg map[string]string) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	inst, _, err := c.server(cctx, "").GetInstance(name)
	if api.StatusErrorCheck(err, http.StatusNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("clean up: %w", err)
	}
	for _, k := range []string{fleet.KeyManaged, keyCreatedAt, keyRunnerID, fleet.KeyJITConfig} {
		if inst.Config[k] != cfg[k] {
			return nil
		}
	}
	return c.cleanup(ctx, name)
}

func checkSpec(spec fleet.InstanceSpec) error {
	var errs []error
	if spec.Name == "" {
		errs = append(errs, errors.New("empty name"))
	}
	if (spec.Image == "") == (spec.SourceInstance == "") {
		errs = append(errs, errors.New("exactly one of Image or SourceInstance is required"))
	}
	return errors.Join(errs...)
}

// resolveImage turns an alias or a (possibly partial) fingerprint into a
// fingerprint. Aliases win, as with `lxc launch`.
func resolveImage(s lxdclient.InstanceServer, name string) (string, error) {
	alias, _, err := s.GetImageAlias(name)
	if err == nil {
		return alias.Target, nil
	}
	if !api.StatusErrorCheck(err, http.StatusNotFound) {
		return "", fmt.Errorf("image alias %s: %w", name, err)
	}
	img, _, err := s.GetImage(name)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", name, notFound(err))
	}
	return img.Fingerprint, nil
}

// Delete stops name with force and deletes it. An instance that is missing,
// or that vanishes on the way because it was ephemeral, is success.
func (c *Client) Delete(ctx context.Context, name string) (err error) {
	defer func() { err = classify(err) }()
	ctx, cancel := c.call(ctx)
	defer cancel()
	// Whatever a cut call did, doing it again gets to the same end: when
	// the address in use does not answer, the next one is asked at once.
	for range c.eps {
		ep := c.current()
		err = c.delete(ctx, ep.server(ctx, c.project, ""), name)
		if !c.observe(ep, err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

func (c *Client) delete(ctx context.Context, s lxdclient.InstanceServer, name string) error {
	op, err := s.UpdateInstanceState(name, api.InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, "")
	if api.StatusErrorCheck(err, http.StatusNotFound) {
		return nil
	}
	if err == nil {
		err = c.wait(ctx, op)
	}
	if err != nil {
		// Stopping a stopped instance is an error, and an operation error
		// carries no status code: judge by the instance's state instead.
		gone, stopped, gerr := state(s, name)
		switch {
		case gone:
			return nil
		case gerr != nil || !stopped:
			return fmt.Errorf("stop instance %s: %w", name, err)
		}
	}
	return c.deleteStopped(ctx, s, name)
}

func (c *Client) deleteStopped(ctx context.Context, s lxdclient.InstanceServer, name string) error {
	// An ephemeral instance is deleted by LXD itself when it stops; our
	// delete can race with that, so a failure is retried a few times while
	// the instance still exists.
	for attempt := 1; ; attempt++ {
		op, err := s.DeleteInstance(name)
		if api.StatusErrorCheck(err, http.StatusNotFound) {
			return nil
		}
		if err == nil {
			err = c.wait(ctx, op)
		}
		if err == nil {
			return nil
		}
		gone, _, gerr := state(s, name)
		if gone {
			return nil
		}
		if gerr != nil || ctx.Err() != nil || attempt == 10 {
			return fmt.Errorf("delete instance %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("delete instance %s: %w", name, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// state reports whether name is gone or stopped.
func state(s lxdclient.InstanceServer, name string) (gone, stopped bool, err error) {
	inst, _, err := s.GetInstance(name)
	if api.StatusErrorCheck(err, http.StatusNotFound) {
		return true, false, nil
	}
	if err != nil {
		return false, false, err
	}
	return false, inst.StatusCode == api.Stopped, nil
}

// List returns the project's managed instances, sorted by name.
func (c *Client) List(ctx context.Context) ([]fleet.Instance, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	var all []api.Instance
	err := c.read(ctx, func(s lxdclient.InstanceServer) (err error) {
		all, err = s.GetInstances(api.InstanceTypeAny)
		return err
	})
	if err != nil {
		return nil, classify(fmt.Errorf("list instances: %w", err))
	}
	out := make([]fleet.Instance, 0, len(all))
	for _, inst := range all {
		if in := toInstance(inst); in.Managed {
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Get returns one instance, managed or not; an error matching
// fleet.ErrNotFound when it does not exist.
func (c *Client) Get(ctx context.Context, name string) (fleet.Instance, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	var inst *api.Instance
	err := c.read(ctx, func(s lxdclient.InstanceServer) (err error) {
		inst, _, err = s.GetInstance(name)
		return err
	})
	if err != nil {
		return fleet.Instance{}, classify(fmt.Errorf("get instance %s: %w", name, notFound(err)))
	}
	return toInstance(*inst), nil
}
