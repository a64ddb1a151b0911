package lxd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	lxdclient "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared/api"
)

// This file holds the instance calls that build runner images: launching a
// non-managed instance, starting, stopping, exec and file push. Unlike the
// runner calls of instances.go, Exec is bounded only by the caller's
// context, since an operator's build step may take far longer than
// OpTimeout.

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
