package lxd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"time"

	lxdclient "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared/api"
)

// This file holds the calls that build runner images: launching a
// non-managed instance, exec, file push, publish, import, alias and profile
// operations. Unlike the runner calls of instances.go, the long ones (Exec,
// Publish) are bounded only by the caller's context, since an operator's
// build step or a big image may take far longer than OpTimeout.

// LaunchSpec is an instance to create and start from an image. It carries
// none of the service's user.runner.* keys unless Config does.
type LaunchSpec struct {
	Name      string
	Image     string // alias or (partial) fingerprint
	Type      string // container (default) or virtual-machine
	Ephemeral bool
	Profiles  []string // nil: LXD's default profile
	Config    map[string]string
	Devices   map[string]map[string]string
}

// Launch creates spec and starts it. When the start fails the instance is
// deleted again.
func (c *Client) Launch(ctx context.Context, spec LaunchSpec) error {
	if spec.Name == "" || spec.Image == "" {
		return errors.New("launch: Name and Image are required")
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	s := c.server(ctx, "")
	fp, err := resolveImage(s, spec.Image)
	if err != nil {
		return fmt.Errorf("launch %s: %w", spec.Name, err)
	}
	req := api.InstancesPost{
		Name: spec.Name,
		Type: api.InstanceType(spec.Type),
		InstancePut: api.InstancePut{
			Config:    spec.Config,
			Devices:   spec.Devices,
			Profiles:  spec.Profiles,
			Ephemeral: spec.Ephemeral,
		},
		Source: api.InstanceSource{Type: api.SourceTypeImage, Fingerprint: fp},
	}
	op, err := s.CreateInstance(req)
	if err == nil {
		err = c.wait(ctx, op)
	}
	if err != nil {
		err = fmt.Errorf("launch %s: %w", spec.Name, err)
		if ctx.Err() != nil {
			err = errors.Join(err, c.cleanup(ctx, spec.Name))
		}
		return err
	}
	if err := c.Start(ctx, spec.Name); err != nil {
		return errors.Join(err, c.cleanup(ctx, spec.Name))
	}
	return nil
}

// Start starts a stopped instance.
func (c *Client) Start(ctx context.Context, name string) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	s := c.server(ctx, "")
	op, err := s.UpdateInstanceState(name, api.InstanceStatePut{Action: "start", Timeout: -1}, "")
	if err == nil {
		err = c.wait(ctx, op)
	}
	if err != nil {
		return fmt.Errorf("start instance %s: %w", name, notFound(err))
	}
	return nil
}

// Stop shuts name down cleanly, waiting at most timeout, then forces it.
// A stopped instance is success.
func (c *Client) Stop(ctx context.Context, name string, timeout time.Duration) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	s := c.server(ctx, "")
	if _, stopped, err := state(s, name); err == nil && stopped {
		return nil
	}
	op, err := s.UpdateInstanceState(name, api.InstanceStatePut{Action: "stop", Timeout: int(timeout.Seconds())}, "")
	if err == nil {
		err = c.wait(ctx, op)
	}
	if err == nil {
		return nil
	}
	op, ferr := s.UpdateInstanceState(name, api.InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, "")
	if ferr == nil {
		ferr = c.wait(ctx, op)
	}
	if ferr != nil {
		if gone, stopped, _ := state(s, name); gone || stopped {
			return nil
		}
		return fmt.Errorf("stop instance %s: %w", name, errors.Join(err, ferr))
	}
	return nil
}

// Status returns LXD's status of name ("Running", "Stopped", ...).
func (c *Client) Status(ctx context.Context, name string) (string, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	inst, _, err := c.server(ctx, "").GetInstance(name)
	if err != nil {
		return "", fmt.Errorf("get instance %s: %w", name, notFound(err))
	}
	return inst.Status, nil
}

// ExecSpec is a command run inside an instance.
type ExecSpec struct {
	Command []string
	Env     map[string]string
	Cwd     string
	Stdin   io.Reader // nil: empty
	Stdout  io.Writer // nil: discarded
	Stderr  io.Writer // nil: discarded
}

// Exec runs a command in a running instance and returns its exit code. The
// error is for failing to run it at all; a non-zero exit is not an error.
func (c *Client) Exec(ctx context.Context, name string, e ExecSpec) (int, error) {
	if len(e.Command) == 0 {
		return -1, errors.New("exec: empty command")
	}
	s := c.server(ctx, "")
	stdin := e.Stdin
	if stdin == nil {
		stdin = bytes.NewReader(nil)
	}
	done := make(chan bool)
	op, err := s.ExecInstance(name, api.InstanceExecPost{
		Command:     e.Command,
		WaitForWS:   true,
		Environment: e.Env,
		Cwd:         e.Cwd,
	}, &lxdclient.InstanceExecArgs{Stdin: stdin, Stdout: e.Stdout, Stderr: e.Stderr, DataDone: done})
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", name, notFound(err))
	}
	id := op.Get().ID
	if err := c.wait(ctx, op); err != nil {
		return -1, fmt.Errorf("exec in %s: %w", name, err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return -1, fmt.Errorf("exec in %s: %w", name, ctx.Err())
	}
	code, ok := opMetadata(s, op, id)["return"].(float64)
	if !ok {
		return -1, fmt.Errorf("exec in %s: no exit code in operation", name)
	}
	return int(code), nil
}

// PushFile writes content to path in the instance (its directory must
// exist), owned by uid:gid with mode.
func (c *Client) PushFile(ctx context.Context, name, path string, content io.ReadSeeker, uid, gid int, mode int) error {
	s := c.server(ctx, "")
	err := s.CreateInstanceFile(name, path, lxdclient.InstanceFileArgs{
		Content: content, UID: int64(uid), GID: int64(gid), Mode: mode, Type: "file", WriteMode: "overwrite",
		UIDModifyExisting: true, GIDModifyExisting: true, ModeModifyExisting: true,
	})
	if err != nil {
		return fmt.Errorf("push %s to %s: %w", path, name, notFound(err))
	}
	return nil
}

// Publish makes a stopped instance into an image with these properties and
// aliases. compression is LXD's algorithm ("" for the server default,
// "none" to skip it). It returns the new image's fingerprint.
func (c *Client) Publish(ctx context.Context, name string, properties map[string]string, aliases []string, compression string) (string, error) {
	s := c.server(ctx, "")
	req := api.ImagesPost{
		ImagePut:             api.ImagePut{Properties: properties},
		Source:               &api.ImagesPostSource{Type: "instance", Name: name},
		CompressionAlgorithm: compression,
	}
	for _, a := range aliases {
		req.Aliases = append(req.Aliases, api.ImageAlias{Name: a})
	}
	op, err := s.CreateImage(req, nil)
	var id string
	if err == nil {
		id = op.Get().ID
		err = c.wait(ctx, op)
	}
	if err != nil {
		return "", fmt.Errorf("publish %s: %w", name, err)
	}
	fp, _ := opMetadata(s, op, id)["fingerprint"].(string)
	if fp == "" {
		return "", fmt.Errorf("publish %s: no fingerprint in operation", name)
	}
	return fp, nil
}

// opMetadata returns the metadata of a finished operation as LXD has it
// now: wait may have learnt the end by polling, in which case op itself
// still holds the metadata from its start.
func opMetadata(s lxdclient.InstanceServer, op lxdclient.Operation, id string) map[string]any {
	if got, _, err := s.GetOperation(id); err == nil && got.StatusCode.IsFinal() {
		return got.Metadata
	}
	return op.Get().Metadata
}

// ImageInfo is what image builds need to know about an image.
type ImageInfo struct {
	Fingerprint  string
	Architecture string // LXD's name: x86_64, aarch64, ...
	Type         string // container or virtual-machine
	Properties   map[string]string
	Aliases      []string
	CreatedAt    time.Time
}

func toImageInfo(img api.Image) ImageInfo {
	info := ImageInfo{Fingerprint: img.Fingerprint, Architecture: img.Architecture, Type: img.Type,
		Properties: img.Properties, CreatedAt: img.CreatedAt}
	for _, a := range img.Aliases {
		info.Aliases = append(info.Aliases, a.Name)
	}
	sort.Strings(info.Aliases)
	return info
}

// Image returns the image that alias or (partial) fingerprint names; an
// error matching fleet.ErrNotFound when there is none.
func (c *Client) Image(ctx context.Context, name string) (ImageInfo, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	s := c.server(ctx, "")
	fp, err := resolveImage(s, name)
	if err != nil {
		return ImageInfo{}, err
	}
	img, _, err := s.GetImage(fp)
	if err != nil {
		return ImageInfo{}, fmt.Errorf("image %s: %w", name, notFound(err))
	}
	return toImageInfo(*img), nil
}

// Images lists the project's images, oldest first.
func (c *Client) Images(ctx context.Context) ([]ImageInfo, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	imgs, err := c.server(ctx, "").GetImages()
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	out := make([]ImageInfo, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, toImageInfo(img))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// AliasTarget returns the fingerprint alias points to, or "" when there is
// no such alias.
func (c *Client) AliasTarget(ctx context.Context, alias string) (string, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	a, _, err := c.server(ctx, "").GetImageAlias(alias)
	if api.StatusErrorCheck(err, http.StatusNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("image alias %s: %w", alias, err)
	}
	return a.Target, nil
}

// SetAlias points alias at fingerprint, creating it or moving it in one
// call (instances launched meanwhile get either the old or the new image).
func (c *Client) SetAlias(ctx context.Context, alias, fingerprint string) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	return setAlias(c.server(ctx, ""), alias, fingerprint)
}

func setAlias(s lxdclient.InstanceServer, alias, fingerprint string) error {
	err := s.UpdateImageAlias(alias, api.ImageAliasesEntryPut{Target: fingerprint}, "")
	if api.StatusErrorCheck(err, http.StatusNotFound) {
		err = s.CreateImageAlias(api.ImageAliasesPost{ImageAliasesEntry: api.ImageAliasesEntry{Name: alias, Target: fingerprint}})
	}
	if err != nil {
		return fmt.Errorf("image alias %s -> %s: %w", alias, fingerprint, err)
	}
	return nil
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
	return fp, setAlias(s, alias, fp)
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
