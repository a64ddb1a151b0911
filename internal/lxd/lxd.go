// Package lxd is a thin wrapper over LXD's Go client: it creates, deletes
// and lists the service's ephemeral runner instances (instances.go, which
// satisfies fleet.Instances; labels.go alone knows how their labels are
// stored), reads a cluster's members and the architectures pools need
// (cluster.go, fleet.Cluster), gets the service's certificate trusted
// (trust.go), and does the calls that image builds use: launch, exec and
// file push (exec.go), images and aliases (images.go), and profiles
// (profiles.go); and the reads `doctor` checks a setup with (inspect.go).
// It reaches LXD through a unix socket, or over HTTPS at several members'
// addresses, moving to the next when the one in use stops answering
// (lxd.go).
package lxd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lxdclient "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared/api"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/rs/zerolog"
)

// Client talks to one LXD server or cluster in one project, through a
// unix socket or over HTTPS to one of several addresses. It is safe for
// concurrent use.
type Client struct {
	eps       []*endpoint
	cur       atomic.Int32 // index in eps of the address in use
	project   string
	opTimeout time.Duration
	log       zerolog.Logger
}

// endpoint is one address of LXD: the unix socket, or one member's URL.
type endpoint struct {
	addr    string
	connect func(ctx context.Context, skipGetServer bool) (lxdclient.InstanceServer, error)

	mu       sync.Mutex
	base     lxdclient.InstanceServer
	ready    bool      // base knows the server (its API extensions)
	failedAt time.Time // when a call to it last found it not answering; zero when it answers
	failure  string
}

// ctxServer is what *lxdclient.ProtocolLXD offers beyond InstanceServer.
type ctxServer interface {
	WithContext(ctx context.Context) lxdclient.InstanceServer
}

// Connect validates cfg, connects and checks that the project exists. With
// several URLs it uses the first that answers; those that do not are
// tried again when the one in use stops answering.
func Connect(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("lxd config: %w", err)
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
	defer cancel()

	c := &Client{project: cfg.Project, opTimeout: cfg.OpTimeout, log: cfg.Log}
	// Every request asks its context's permit first (fleet.WithPermit): a
	// leader whose lease may have lapsed sends nothing.
	args := lxdclient.ConnectionArgs{UserAgent: "lxd-gha-autoscaler",
		TransportWrapper: func(t *http.Transport) lxdclient.HTTPTransporter { permitConns(t); return permitted{t} }}
	if cfg.Socket != "" {
		c.eps = append(c.eps, &endpoint{addr: cfg.Socket, connect: func(ctx context.Context, skip bool) (lxdclient.InstanceServer, error) {
			a := args
			a.SkipGetServer = skip
			return lxdclient.ConnectLXDUnixWithContext(ctx, cfg.Socket, &a)
		}})
	} else {
		args.TLSClientCert = string(cfg.ClientCert)
		args.TLSClientKey = string(cfg.ClientKey)
		args.TLSServerCert = string(cfg.ServerCert)
		for _, u := range cfg.URLs {
			c.eps = append(c.eps, &endpoint{addr: strings.TrimSuffix(u, "/"), connect: func(ctx context.Context, skip bool) (lxdclient.InstanceServer, error) {
				a := args
				a.SkipGetServer = skip
				return lxdclient.ConnectLXDWithContext(ctx, u, &a)
			}})
		}
	}
	for _, ep := range c.eps {
		// No request: the client is made here and knows the server once
		// the address first answers (ensure).
		s, err := ep.connect(ctx, true)
		if err != nil {
			return nil, fmt.Errorf("connect to lxd %s: %w", ep.addr, err)
		}
		if _, ok := s.(ctxServer); !ok {
			return nil, fmt.Errorf("connect to lxd: client %T cannot take a context", s)
		}
		ep.base = s
	}
	// The first address that answers; a missing project would otherwise
	// surface only on the first List.
	err := c.read(ctx, func(s lxdclient.InstanceServer) error {
		_, _, err := s.GetProject(cfg.Project)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect to lxd %s: project %s: %w", c.addrs(), cfg.Project, classify(notFound(err)))
	}
	return c, nil
}

func (c *Client) addrs() string {
	var out []string
	for _, ep := range c.eps {
		out = append(out, ep.addr)
	}
	return strings.Join(out, ", ")
}

// Address is the address in use: the socket's path, or a member's URL.
func (c *Client) Address() string { return c.current().addr }

func (c *Client) current() *endpoint { return c.eps[c.cur.Load()] }

// server returns a private copy of the connection to the address in use,
// bound to ctx. The LXD client keeps its context in the struct and its
// WithContext mutates the receiver, so sharing one value between
// goroutines would race; UseProject/UseTarget return fresh copies that
// share the HTTP transport.
func (c *Client) server(ctx context.Context, target string) lxdclient.InstanceServer {
	return c.current().server(ctx, c.project, target)
}

func (ep *endpoint) server(ctx context.Context, project, target string) lxdclient.InstanceServer {
	ep.ensure(ctx)
	ep.mu.Lock()
	base := ep.base
	ep.mu.Unlock()
	s := base.UseProject(project)
	if target != "" {
		s = s.UseTarget(target)
	}
	return permittedServer{s.(ctxServer).WithContext(ctx), ctx}
}

// ensure makes ep's client know the server, once the address answers:
// the LXD client checks its API extensions before some calls, and one
// that never asked assumes every extension. The copies that calls hold
// keep the client they started with.
func (ep *endpoint) ensure(ctx context.Context) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.ready {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	s, err := ep.connect(cctx, false)
	if err != nil {
		return // the call about to be made finds out, and says so
	}
	if _, ok := s.(ctxServer); ok {
		ep.base, ep.ready = s, true
	}
}

// read runs fn, an idempotent call, against the address in use; when that
// address does not answer, it moves to the next and runs fn again there,
// once per address.
func (c *Client) read(ctx context.Context, fn func(lxdclient.InstanceServer) error) error {
	var err error
	for range c.eps {
		ep := c.current()
		err = fn(ep.server(ctx, c.project, ""))
		if !c.observe(ep, err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// observe notes how a call to ep went. When ep did not answer (and LXD
// did not answer through it: a member forwarding for another is not
// down), the client moves to the next address, and observe reports true.
func (c *Client) observe(ep *endpoint, err error) bool {
	if !endpointDown(err) {
		if err == nil {
			ep.mu.Lock()
			ep.failedAt, ep.failure = time.Time{}, ""
			ep.mu.Unlock()
		}
		return false
	}
	ep.mu.Lock()
	ep.failedAt, ep.failure = time.Now(), err.Error()
	ep.mu.Unlock()
	if len(c.eps) == 1 {
		return false
	}
	for i, e := range c.eps {
		if e != ep {
			continue
		}
		next := int32((i + 1) % len(c.eps))
		if c.cur.CompareAndSwap(int32(i), next) {
			c.log.Warn().Err(err).Str("from", ep.addr).Str("to", c.eps[next].addr).Msg("lxd: address does not answer; moving to the next")
		}
		return true
	}
	return false
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
	var streamErr error // the event stream ended with the address in use
	for {
		select {
		case err := <-done:
			// In a cluster the operation lives on in a member that answers:
			// another address can tell how it ends. Alone, LXD is gone.
			if err == nil || len(c.eps) == 1 || !endpointDown(err) {
				return err
			}
			streamErr, done = err, nil
			c.probe(ctx)
		case <-tick.C:
			ep := c.current()
			got, _, err := ep.server(ctx, c.project, "").GetOperation(id)
			switch {
			case c.observe(ep, err):
				continue // asked again at the next address
			case err != nil && streamErr != nil && (api.StatusErrorCheck(err, http.StatusNotFound) || answered(err) && containsAny(err.Error(), memberDownText)):
				// Nobody knows the operation any more, or the member that
				// runs it does not answer: what it did is not known.
				return errors.Join(streamErr, err)
			case err != nil || !got.StatusCode.IsFinal():
				continue // the event stream may still tell; ctx bounds the wait
			case got.Err != "":
				return errors.New(got.Err)
			}
			return nil
		}
	}
}

// probe asks the address in use whether it answers, so that the client
// moves on at once when it does not.
func (c *Client) probe(ctx context.Context) {
	ep := c.current()
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	_, _, err := ep.server(pctx, c.project, "").GetServer()
	c.observe(ep, err)
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

// Ping checks that LXD answers, at one of its addresses.
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	err := c.read(ctx, func(s lxdclient.InstanceServer) error {
		_, _, err := s.GetServer()
		return err
	})
	if err != nil {
		return classify(fmt.Errorf("ping lxd %s: %w", c.Address(), err))
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

// permitConns makes every write to LXD ask the permit of the request the
// connection was dialled for. RoundTrip's check alone leaves a window: a
// process stopped (SIGSTOP, a long pause) after that check and before the
// transport writes the request sends it when it resumes, after its lease
// lapsed; checked at each write, the window is the write call itself.
// The LXD client dials a connection per request (no keep-alives, made
// sure of here), and the transport dials with the request's context
// values, so a connection carries exactly its request's permit.
func permitConns(t *http.Transport) {
	t.DisableKeepAlives = true
	wrap := func(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dial == nil {
			return nil
		}
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return permittedConn{conn, ctx}, nil
		}
	}
	t.DialContext = wrap(t.DialContext)
	t.DialTLSContext = wrap(t.DialTLSContext)
}

// permittedConn writes only while its request's permit allows it.
type permittedConn struct {
	net.Conn
	ctx context.Context
}

func (c permittedConn) Write(b []byte) (int, error) {
	if err := fleet.Permitted(c.ctx); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

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
