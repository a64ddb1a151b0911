// Package lxd is a thin wrapper over LXD's Go client: it creates, deletes
// and lists the service's ephemeral runner instances (instances.go, which
// satisfies fleet.Instances; labels.go alone knows how their labels are
// stored), and does the calls that image builds use: launch, exec and
// file push (exec.go), images and aliases (images.go), and profiles
// (profiles.go); and the reads `doctor` checks a setup with (inspect.go).
package lxd

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	lxdclient "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared/api"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

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

	args := &lxdclient.ConnectionArgs{UserAgent: "lxd-gha-autoscaler",
		TransportWrapper: func(t *http.Transport) lxdclient.HTTPTransporter { return permitted{t} }}
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
	return permittedServer{s.(ctxServer).WithContext(ctx), ctx}
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

// opMetadata returns the metadata of a finished operation as LXD has it
// now: wait may have learnt the end by polling, in which case op itself
// still holds the metadata from its start.
func opMetadata(s lxdclient.InstanceServer, op lxdclient.Operation, id string) map[string]any {
	if got, _, err := s.GetOperation(id); err == nil && got.StatusCode.IsFinal() {
		return got.Metadata
	}
	return op.Get().Metadata
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

// permitted sends a request only if its context's permit allows it
// (fleet.WithPermit): a leader whose lease may have lapsed sends nothing,
// its cleanups on a context without cancellation included.
type permitted struct{ t *http.Transport }

func (p permitted) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := fleet.Permitted(req.Context()); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	return p.t.RoundTrip(req)
}

func (p permitted) Transport() *http.Transport { return p.t }

// permittedServer checks ctx's permit before each call that starts an
// operation. The client opens its event stream before it sends such a
// call, over a websocket that permitted does not see: a leader whose lease
// may have lapsed must not open that either.
type permittedServer struct {
	lxdclient.InstanceServer
	ctx context.Context
}

func (s permittedServer) CreateInstance(req api.InstancesPost) (lxdclient.Operation, error) {
	if err := fleet.Permitted(s.ctx); err != nil {
		return nil, err
	}
	return s.InstanceServer.CreateInstance(req)
}

func (s permittedServer) UpdateInstanceState(name string, state api.InstanceStatePut, etag string) (lxdclient.Operation, error) {
	if err := fleet.Permitted(s.ctx); err != nil {
		return nil, err
	}
	return s.InstanceServer.UpdateInstanceState(name, state, etag)
}

func (s permittedServer) DeleteInstance(name string) (lxdclient.Operation, error) {
	if err := fleet.Permitted(s.ctx); err != nil {
		return nil, err
	}
	return s.InstanceServer.DeleteInstance(name)
}
