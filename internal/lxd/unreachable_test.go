package lxd_test

import (
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/devimage"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
)

// relay is a unix socket that forwards to the real LXD socket until cut,
// which then looks to a client like the daemon went away.
type relay struct {
	path  string
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newRelay(t *testing.T) *relay {
	t.Helper()
	r := &relay{path: filepath.Join(t.TempDir(), "lxd.socket")}
	ln, err := net.Listen("unix", r.path)
	if err != nil {
		t.Fatal(err)
	}
	r.ln = ln
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("unix", lxdtest.SocketPath())
			if err != nil {
				in.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, in, out)
			r.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(r.cut)
	return r
}

// cut stops accepting and drops every connection.
func (r *relay) cut() {
	r.ln.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
}

// When LXD stops answering, every call says so with an error matching
// fleet.ErrUnreachable; an answer from LXD, even "not found", does not.
// The scheduler relies on this to keep a launch's registration while LXD is
// away instead of spending a new one.
func TestUnreachable(t *testing.T) {
	t.Parallel()
	real := lxdtest.Connect(t) // skips without LXD
	alias, _ := lxdtest.Image(t, real, devimage.Options{})
	ctx := lxdtest.Ctx(t)
	r := newRelay(t)
	c, err := lxd.Connect(ctx, lxd.Config{Socket: r.path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, lxdtest.Name(t)); !errors.Is(err, fleet.ErrNotFound) || errors.Is(err, fleet.ErrUnreachable) {
		t.Fatalf("Get of a missing instance = %v, want ErrNotFound only", err)
	}
	bad := fleet.InstanceSpec{Name: lxdtest.Name(t), Image: "no-such-image-" + lxdtest.Name(t), Type: "container", JITConfig: "s3cr3t"}
	if err := c.Create(ctx, bad); err == nil || errors.Is(err, fleet.ErrUnreachable) {
		t.Fatalf("Create from a missing image = %v, want an answer from LXD", err)
	}

	r.cut()
	name := lxdtest.Name(t)
	lxdtest.Cleanup(t, real, name)
	spec := fleet.InstanceSpec{Name: name, Image: alias, Type: "container", Profiles: []string{"default"}, JITConfig: "s3cr3t"}
	for what, err := range map[string]error{
		"Create": c.Create(ctx, spec),
		"Delete": c.Delete(ctx, name),
		"Ping":   c.Ping(ctx),
		"Get":    func() error { _, err := c.Get(ctx, name); return err }(),
		"List":   func() error { _, err := c.List(ctx); return err }(),
	} {
		if !errors.Is(err, fleet.ErrUnreachable) {
			t.Errorf("%s with LXD away = %v, want ErrUnreachable", what, err)
		}
	}
	if _, err := real.Get(ctx, name); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("an instance was made while LXD was away: %v", err)
	}
}
