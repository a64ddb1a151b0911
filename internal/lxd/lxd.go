// Package lxd is a thin wrapper over LXD's Go client that creates, deletes
// and lists the service's ephemeral runner instances.
package lxd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	lxdclient "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared/api"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/scheduler"
)

var _ scheduler.Instances = (*Client)(nil)

// cleanupTimeout bounds the clean-up done after a failed or cancelled call,
// which runs on a fresh context because the caller's may be spent.
const cleanupTimeout = 30 * time.Second

// Client talks to one LXD server (or cluster) in one project. It is safe for
// concurrent use.
type Client struct {
	base      lxdclient.InstanceServer
	project   string
	opTimeout time.Duration
}

// ctxServer is what *lxdclient.ProtocolLXD offers beyond InstanceServer.
type ctxServer interface {
	WithContext(ctx context.Context) lxdclient.InstanceServer
}

// Connect validates cfg, connects and checks that the project exists.
func Connect(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("lxd config: %w", err)
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
	defer cancel()

	args := &lxdclient.ConnectionArgs{UserAgent: "lxd-gha-autoscaler"}
	var (
		s   lxdclient.InstanceServer
		err error
	)
	if cfg.Socket != "" {
		s, err = lxdclient.ConnectLXDUnixWithContext(ctx, cfg.Socket, args)
	} else {
		args.TLSClientCert = string(cfg.ClientCert)
		args.TLSClientKey = string(cfg.ClientKey)
		args.TLSServerCert = string(cfg.ServerCert)
		s, err = lxdclient.ConnectLXDWithContext(ctx, cfg.URL, args)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to lxd %s: %w", cfg.Socket+cfg.URL, err)
	}
	if _, ok := s.(ctxServer); !ok {
		return nil, fmt.Errorf("connect to lxd: client %T cannot take a context", s)
	}
	c := &Client{base: s, project: cfg.Project, opTimeout: cfg.OpTimeout}
	// A missing project would otherwise surface only on the first List.
	if _, _, err := c.server(ctx, "").GetProject(cfg.Project); err != nil {
		return nil, fmt.Errorf("connect to lxd: project %s: %w", cfg.Project, notFound(err))
	}
	return c, nil
}

// server returns a private copy of the connection bound to ctx. The LXD
// client keeps its context in the struct and its WithContext mutates the
// receiver, so sharing one value between goroutines would race;
// UseProject/UseTarget return fresh copies that share the HTTP transport.
func (c *Client) server(ctx context.Context, target string) lxdclient.InstanceServer {
	s := c.base.UseProject(c.project)
	if target != "" {
		s = s.UseTarget(target)
	}
	return s.(ctxServer).WithContext(ctx)
}

// call bounds one public call by OpTimeout.
func (c *Client) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opTimeout)
}

// wait waits for op; if ctx ends first it asks LXD to cancel the operation
// (most LXD operations refuse, which is fine: the caller cleans up).
//
// The client learns that an operation ended from LXD's event stream. Under
// load that news was seen to arrive a minute late, so the operation is also
// polled every second: whichever tells first ends the wait. When the poll
// wins, op's own copy of the operation is stale: callers that need its
// metadata read the operation again.
func (c *Client) wait(ctx context.Context, op lxdclient.Operation) error {
	err := c.waitOrPoll(ctx, op)
	if err != nil && ctx.Err() != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = c.server(cctx, "").DeleteOperation(op.Get().ID)
	}
	return err
}

func (c *Client) waitOrPoll(ctx context.Context, op lxdclient.Operation) error {
	id := op.Get().ID // before the wait starts writing to op
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- op.WaitContext(wctx) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			got, _, err := c.server(ctx, "").GetOperation(id)
			if err != nil || !got.StatusCode.IsFinal() {
				continue // the event stream may still tell; ctx bounds the wait
			}
			if got.Err != "" {
				return errors.New(got.Err)
			}
			return nil
		}
	}
}

// Ping checks that the server answers.
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	if _, _, err := c.server(ctx, "").GetServer(); err != nil {
		return classify(fmt.Errorf("ping lxd: %w", err))
	}
	return nil
}

// Create creates spec as an ephemeral instance and starts it. KeyManaged is
// always set, KeyCreatedAt is set to now when spec.Config lacks it, and
// KeyJITConfig holds spec.JITConfig. A copy (spec.SourceInstance) takes the
// source's config, devices and, when spec.Profiles is nil, profiles, but
// none of its snapshots or user.runner.* labels. When the start fails the
// instance is deleted again. A missing image or source instance gives an
// error that matches scheduler.ErrNotFound. Errors never contain the JIT
// config.
func (c *Client) Create(ctx context.Context, spec scheduler.InstanceSpec) (err error) {
	defer func() { err = classify(redact(err, spec.JITConfig.Reveal())) }()
	if err := checkSpec(spec); err != nil {
		return fmt.Errorf("create instance %s: %w", spec.Name, err)
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	s := c.server(ctx, spec.Target)

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

	op, err = s.UpdateInstanceState(spec.Name, api.InstanceStatePut{Action: "start", Timeout: -1}, "")
	if err == nil {
		err = c.wait(ctx, op)
	}
	if err != nil {
		return errors.Join(fmt.Errorf("start instance %s: %w", spec.Name, err), c.cleanup(ctx, spec.Name))
	}
	return nil
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
	for _, k := range []string{scheduler.KeyManaged, scheduler.KeyCreatedAt, scheduler.KeyJITConfig} {
		if inst.Config[k] != cfg[k] {
			return nil
		}
	}
	return c.cleanup(ctx, name)
}

func checkSpec(spec scheduler.InstanceSpec) error {
	var errs []error
	if spec.Name == "" {
		errs = append(errs, errors.New("empty name"))
	}
	if (spec.Image == "") == (spec.SourceInstance == "") {
		errs = append(errs, errors.New("exactly one of Image or SourceInstance is required"))
	}
	return errors.Join(errs...)
}

func instanceConfig(spec scheduler.InstanceSpec) map[string]string {
	cfg := make(map[string]string, len(spec.Config)+3)
	for k, v := range spec.Config {
		cfg[k] = v
	}
	cfg[scheduler.KeyManaged] = "true"
	if cfg[scheduler.KeyCreatedAt] == "" {
		cfg[scheduler.KeyCreatedAt] = time.Now().UTC().Format(time.RFC3339)
	}
	cfg[scheduler.KeyJITConfig] = spec.JITConfig.Reveal()
	// An explicit "" stops a copy from inheriting the source's value (LXD
	// then drops the key): a template's labels must not pass for the copy's.
	for _, k := range []string{scheduler.KeyOwner, scheduler.KeyPool, scheduler.KeyJobID, scheduler.KeyRunnerID,
		scheduler.KeyOrg, scheduler.KeyInstall} {
		if _, ok := cfg[k]; !ok {
			cfg[k] = ""
		}
	}
	return cfg
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
	s := c.server(ctx, "")

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

// List returns the project's instances that carry KeyManaged="true", sorted
// by name.
func (c *Client) List(ctx context.Context) ([]scheduler.Instance, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	all, err := c.server(ctx, "").GetInstances(api.InstanceTypeAny)
	if err != nil {
		return nil, classify(fmt.Errorf("list instances: %w", err))
	}
	out := make([]scheduler.Instance, 0, len(all))
	for _, inst := range all {
		if inst.Config[scheduler.KeyManaged] != "true" {
			continue
		}
		out = append(out, toInstance(inst))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Get returns one instance, managed or not; scheduler.ErrNotFound when it
// does not exist.
func (c *Client) Get(ctx context.Context, name string) (scheduler.Instance, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	inst, _, err := c.server(ctx, "").GetInstance(name)
	if err != nil {
		return scheduler.Instance{}, classify(fmt.Errorf("get instance %s: %w", name, notFound(err)))
	}
	return toInstance(*inst), nil
}

// toInstance parses our keys; a bad value is left zero because the keys are
// editable by anyone with access to LXD.
func toInstance(inst api.Instance) scheduler.Instance {
	out := scheduler.Instance{
		Name:   inst.Name,
		Owner:  inst.Config[scheduler.KeyOwner],
		Pool:   inst.Config[scheduler.KeyPool],
		Status: inst.Status,
	}
	out.JobID = parseID(inst.Config[scheduler.KeyJobID])
	out.RunnerID = parseID(inst.Config[scheduler.KeyRunnerID])
	out.Org = inst.Config[scheduler.KeyOrg]
	out.InstallID = parseID(inst.Config[scheduler.KeyInstall])
	if v, err := time.Parse(time.RFC3339, inst.Config[scheduler.KeyCreatedAt]); err == nil {
		out.CreatedAt = v.UTC()
	}
	return out
}

// parseID returns a positive id, or 0 for anything else.
func parseID(s string) int64 {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0
	}
	return v
}

// ImportImage uploads a unified image tarball (plain or compressed) and
// points alias at it, replacing the alias's old target. Importing an image
// that already exists is success. When only the alias fails, the
// fingerprint is returned with the error so that the caller can delete the
// image. An empty alias adds none.
func (c *Client) ImportImage(ctx context.Context, tarball io.Reader, alias string) (string, error) {
	if tarball == nil {
		return "", errors.New("import image: nil tarball")
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	s := c.server(ctx, "")

	// LXD names an image by the sha256 of the uploaded tarball; hashing
	// while uploading finds the existing image when the upload is refused
	// as a duplicate (an error with no status code to test).
	h := sha256.New()
	body := io.TeeReader(ctxReader{ctx: ctx, r: tarball}, h)
	op, err := s.CreateImage(api.ImagesPost{}, &lxdclient.ImageCreateArgs{MetaFile: body})
	if err == nil {
		err = c.wait(ctx, op)
	}
	var fp string
	if err == nil {
		fp, _ = op.Get().Metadata["fingerprint"].(string)
	}
	if err != nil || fp == "" {
		_, _ = io.Copy(h, ctxReader{ctx: ctx, r: tarball}) // hash what LXD did not read
		sum := hex.EncodeToString(h.Sum(nil))
		if _, _, gerr := s.GetImage(sum); gerr != nil {
			if err == nil {
				err = errors.New("no fingerprint in operation")
			}
			return "", fmt.Errorf("import image: %w", err)
		}
		fp = sum
	}
	if alias == "" {
		return fp, nil
	}
	err = s.CreateImageAlias(api.ImageAliasesPost{ImageAliasesEntry: api.ImageAliasesEntry{Name: alias, Target: fp}})
	if api.StatusErrorCheck(err, http.StatusConflict) {
		err = s.UpdateImageAlias(alias, api.ImageAliasesEntryPut{Target: fp}, "")
	}
	if err != nil {
		return fp, fmt.Errorf("image alias %s -> %s: %w", alias, fp, err)
	}
	return fp, nil
}

// DeleteImage deletes the image with this fingerprint, and so its aliases.
// A missing image is success.
func (c *Client) DeleteImage(ctx context.Context, fingerprint string) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	s := c.server(ctx, "")
	op, err := s.DeleteImage(fingerprint)
	if api.StatusErrorCheck(err, http.StatusNotFound) {
		return nil
	}
	if err == nil {
		err = c.wait(ctx, op)
	}
	if err != nil {
		if _, _, gerr := s.GetImage(fingerprint); api.StatusErrorCheck(gerr, http.StatusNotFound) {
			return nil
		}
		return fmt.Errorf("delete image %s: %w", fingerprint, err)
	}
	return nil
}

// EnsureProfile creates profile name with exactly these devices, or
// replaces the devices of the existing profile (its config is kept).
func (c *Client) EnsureProfile(ctx context.Context, name string, devices map[string]map[string]string) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	s := c.server(ctx, "")
	p, etag, err := s.GetProfile(name)
	switch {
	case api.StatusErrorCheck(err, http.StatusNotFound):
		err = s.CreateProfile(api.ProfilesPost{Name: name, ProfilePut: api.ProfilePut{Devices: devices}})
	case err == nil:
		put := p.Writable()
		put.Devices = devices
		err = s.UpdateProfile(name, put, etag)
	}
	if err != nil {
		return fmt.Errorf("ensure profile %s: %w", name, err)
	}
	return nil
}

// DeleteProfile deletes profile name; a missing one is success.
func (c *Client) DeleteProfile(ctx context.Context, name string) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	err := c.server(ctx, "").DeleteProfile(name)
	if err != nil && !api.StatusErrorCheck(err, http.StatusNotFound) {
		return fmt.Errorf("delete profile %s: %w", name, err)
	}
	return nil
}

// notFoundError keeps LXD's message but also matches scheduler.ErrNotFound.
type notFoundError struct{ err error }

func (e notFoundError) Error() string   { return e.err.Error() }
func (e notFoundError) Unwrap() []error { return []error{e.err, scheduler.ErrNotFound} }

func notFound(err error) error {
	if api.StatusErrorCheck(err, http.StatusNotFound) {
		return notFoundError{err}
	}
	return err
}

// unreachableError keeps LXD's message but also matches
// scheduler.ErrUnreachable.
type unreachableError struct{ err error }

func (e unreachableError) Error() string   { return e.err.Error() }
func (e unreachableError) Unwrap() []error { return []error{e.err, scheduler.ErrUnreachable} }

// classify marks err as scheduler.ErrUnreachable when LXD did not answer: a
// failed dial, a connection cut during the call, or the event stream closing
// under an operation. The client reports the last only as text, so the
// message is checked too.
func classify(err error) error {
	if err == nil || errors.Is(err, scheduler.ErrUnreachable) {
		return err
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return unreachableError{err}
	}
	msg := err.Error()
	for _, s := range []string{"websocket: close", "connection refused", "connection reset by peer", "broken pipe", "unexpected EOF"} {
		if strings.Contains(msg, s) {
			return unreachableError{err}
		}
	}
	return err
}

// redactedError hides a secret that LXD echoed back (e.g. in a message about
// a bad config value) while keeping the chain for errors.Is.
type redactedError struct {
	msg string
	err error
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.err }

func redact(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return redactedError{msg: strings.ReplaceAll(err.Error(), secret, scheduler.Secret(secret).String()), err: err}
}

// ctxReader stops an upload when ctx ends: the client's image upload does
// not take a context.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
