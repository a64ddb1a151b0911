// Package app wires the webhook handler, the state store, the scheduler,
// the redeliverer, metrics and the admin API into one service. It takes
// built dependencies; it reads no files and no environment.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/leader"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/metrics"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/redeliver"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/scheduler"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/webhook"
)

// Config is what the service needs beyond its dependencies.
type Config struct {
	WebhookSecret []byte
	Scheduler     scheduler.Config
	Redeliver     redeliver.Config
	// AdminListen is "unix:/path" or "host:port" for the admin API and
	// status page; empty turns them off. Never the webhook's listener.
	AdminListen string
	// AdminToken is required when AdminListen is TCP off loopback.
	AdminToken string
	// AdminTLSCert and AdminTLSKey, PEM, make a TCP admin listener serve
	// HTTPS only. Required when AdminListen is TCP off loopback: the token
	// and what the API answers would otherwise cross the network in clear.
	AdminTLSCert    []byte
	AdminTLSKey     []byte
	ShutdownTimeout time.Duration // for requests in flight; default 10s
}

// Validate's errors for a missing setting, so that the config file's
// reader can drop one that a failed file read already explains.
var (
	// ErrNoAdminToken: the admin listener needs a token and has none.
	ErrNoAdminToken = errors.New("set admin_token_file")
	// ErrNoAdminTLS: the admin listener needs TLS and has none.
	ErrNoAdminTLS = errors.New("set admin_tls_cert_file and admin_tls_key_file")
	// ErrNoAdminTLSCert and ErrNoAdminTLSKey: one of the pair is missing.
	ErrNoAdminTLSCert = errors.New("admin_tls_cert_file is required with admin_tls_key_file")
	ErrNoAdminTLSKey  = errors.New("admin_tls_key_file is required with admin_tls_cert_file")
)

// Validate reports, in the config file's words, what the service's own
// settings get wrong; each package's Config checks its own part.
func (c Config) Validate() error {
	hasTLS := len(c.AdminTLSCert) > 0 || len(c.AdminTLSKey) > 0
	errTLSNotTCP := errors.New("admin_tls_cert_file and admin_tls_key_file are only used with a TCP admin_listen")
	if c.AdminListen == "" {
		if hasTLS {
			return errTLSNotTCP
		}
		return nil
	}
	if path, ok := strings.CutPrefix(c.AdminListen, admin.UnixPrefix); ok {
		var errs []error
		if path == "" {
			errs = append(errs, fmt.Errorf("admin_listen %q: empty socket path", c.AdminListen))
		}
		if hasTLS {
			errs = append(errs, errTLSNotTCP)
		}
		return errors.Join(errs...)
	}
	if _, _, err := net.SplitHostPort(c.AdminListen); err != nil {
		return fmt.Errorf("admin_listen %q: want unix:/path, host:port or off", c.AdminListen)
	}
	var errs []error
	switch {
	case !hasTLS:
	case len(c.AdminTLSCert) == 0:
		errs = append(errs, ErrNoAdminTLSCert)
	case len(c.AdminTLSKey) == 0:
		errs = append(errs, ErrNoAdminTLSKey)
	default:
		if _, err := tls.X509KeyPair(c.AdminTLSCert, c.AdminTLSKey); err != nil {
			errs = append(errs, fmt.Errorf("admin_tls_cert_file and admin_tls_key_file: %w", err))
		}
	}
	if admin.RequiresToken(c.AdminListen) {
		if c.AdminToken == "" {
			errs = append(errs, fmt.Errorf("admin_listen %s is reachable from other hosts: %w", c.AdminListen, ErrNoAdminToken))
		}
		if !hasTLS {
			errs = append(errs, fmt.Errorf("admin_listen %s is reachable from other hosts: %w", c.AdminListen, ErrNoAdminTLS))
		}
	}
	return errors.Join(errs...)
}

// Deps are the service's built dependencies.
type Deps struct {
	State     fleet.State
	Instances fleet.Instances
	GitHub    fleet.GitHub
	// Cluster, when set, is LXD's members: the scheduler places runners
	// on them itself, and the admin API shows and drains them.
	Cluster fleet.Cluster
	// Deliveries lists and redelivers the App's webhook deliveries; nil
	// turns the recovery of missed webhooks off.
	Deliveries redeliver.Deliveries
	// Readiness checks besides the state database; each returns nil when
	// healthy. LXD: the daemon answers. GitHub: a token can be had.
	CheckLXD    func(context.Context) error
	CheckGitHub func(ctx context.Context, installationID int64) error
	Metrics     *metrics.Metrics // nil: no metrics
	Clock       fleet.Clock      // nil: the wall clock
	Log         zerolog.Logger
	// Replicas, when set, makes this process one of several replicas on a
	// shared state; nil: it is the only one, and always leads.
	Replicas *Replicas
	// LeaderTasks run beside the scheduler, while this replica leads
	// (e.g. scheduled image rebuilds).
	LeaderTasks []func(context.Context) error
}

// Replicas is how a replica shares the state with the others. Every
// replica takes webhooks and answers the admin API; only the one the
// Elector makes leader decides and acts, writing through Fenced and
// calling LXD and GitHub through the Elector's guard.
type Replicas struct {
	Elector *leader.Elector
	// Fenced is the state as the leader writes it: each transaction checks
	// that this replica's lease still holds.
	Fenced fleet.State
	// Listen calls wake whenever any replica records fresh deliveries.
	Listen func(ctx context.Context, wake func()) error
	// Leader says who leads now, as the shared state has it.
	Leader func(ctx context.Context) (holder string, since time.Time, err error)
}

// App is the running service.
type App struct {
	cfg       Config
	st        fleet.State
	sched     *scheduler.Scheduler
	redel     *redeliver.Redeliverer // nil when off
	instances fleet.Instances
	cluster   fleet.Cluster // nil: no members to show
	clock     fleet.Clock
	replicas  *Replicas // nil: the only replica
	ready     *readiness

	leaderTasks []func(context.Context) error
	mux         http.Handler
	admin       http.Handler
	adminCert   *tls.Certificate // nil: the admin listener is plain
	log         zerolog.Logger
}

// New builds the service.
func New(cfg Config, d Deps) (*App, error) {
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Clock == nil {
		d.Clock = fleet.WallClock
	}
	log := d.Log
	inst := d.Instances
	// Typed nils stay out of the interfaces below.
	var schedMetrics fleet.Metrics
	var hookMetrics webhook.Metrics
	if d.Metrics != nil {
		inst = metrics.InstrumentInstances(inst, d.Metrics)
		schedMetrics, hookMetrics = d.Metrics, d.Metrics
	}
	// What the leader decides and does goes through these.
	leadState, leadInst, leadGH, leadDeliveries, leadCluster := d.State, inst, d.GitHub, d.Deliveries, d.Cluster
	if r := d.Replicas; r != nil {
		leadState, leadInst, leadGH = r.Fenced, r.Elector.Instances(inst), r.Elector.GitHub(d.GitHub)
		if d.Cluster != nil {
			leadCluster = r.Elector.Cluster(d.Cluster)
		}
		if d.Deliveries != nil {
			leadDeliveries = guardedDeliveries{r.Elector, d.Deliveries}
		}
	}
	sched, err := scheduler.New(cfg.Scheduler, scheduler.Deps{
		State: leadState, Instances: leadInst, GitHub: leadGH, Cluster: leadCluster, Metrics: schedMetrics, Clock: d.Clock, Log: log,
	})
	if err != nil {
		return nil, err
	}
	hook, err := webhook.New(cfg.WebhookSecret, d.State, webhook.Options{
		Notify: sched.Notify, Metrics: hookMetrics, Clock: d.Clock, Log: log,
		// Any replica records it, unfenced, as it records deliveries.
		Heard: func(ctx context.Context, event string, at time.Time) error {
			return d.State.Update(ctx, func(tx fleet.Tx) error { return tx.HeardWebhook(event, at) })
		},
		// Likewise any replica records an installation's news; the leader
		// reads it at its next step.
		Installation: func(ctx context.Context, in fleet.Installation) error {
			return d.State.Update(ctx, func(tx fleet.Tx) error { return tx.PutInstallation(in) })
		},
		// A delivery older than the state remembers jobs could queue a
		// forgotten job again.
		MaxAge: cfg.Scheduler.WithDefaults().Retention,
	})
	if err != nil {
		return nil, err
	}
	var redel *redeliver.Redeliverer
	if d.Deliveries != nil {
		redel, err = redeliver.New(cfg.Redeliver, leadDeliveries, d.State, d.Clock, log)
		if err != nil {
			return nil, err
		}
	}
	a := &App{
		cfg: cfg, st: d.State, sched: sched, redel: redel, instances: inst, cluster: d.Cluster, clock: d.Clock,
		replicas: d.Replicas, leaderTasks: d.LeaderTasks,
		ready: newReadiness(d.State, d.Clock, d.CheckLXD, d.CheckGitHub),
		log:   log.With().Str("component", "app").Logger(),
	}
	a.ready.leader = a.leaderStatus
	if d.Metrics != nil {
		d.Metrics.SetStateSource(a.stateSource)
		if d.Replicas == nil {
			d.Metrics.LeaderRole(true) // the only replica always leads
		}
	}

	r := chi.NewRouter()
	r.Post("/webhook", hook.ServeHTTP)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	r.Get("/readyz", a.ready.ServeHTTP)
	if d.Metrics != nil {
		r.Handle("/metrics", d.Metrics.Handler())
	}
	a.mux = r
	if cfg.AdminListen != "" {
		ah := admin.NewHandler(backend{a: a}, admin.Options{Token: cfg.AdminToken, Clock: d.Clock, Log: log})
		am := http.NewServeMux()
		am.Handle("/", ah)
		am.HandleFunc("GET /readyz", a.ready.ServeHTTP)
		if d.Metrics != nil {
			am.Handle("GET /metrics", d.Metrics.Handler())
		}
		a.admin = am
		if len(cfg.AdminTLSCert) > 0 {
			cert, err := tls.X509KeyPair(cfg.AdminTLSCert, cfg.AdminTLSKey) // Validate parsed it
			if err != nil {
				return nil, fmt.Errorf("admin TLS: %w", err)
			}
			a.adminCert = &cert
		}
	}
	return a, nil
}

// Handler is the webhook listener's HTTP handler.
func (a *App) Handler() http.Handler { return a.mux }

// AdminHandler is the admin listener's HTTP handler; nil when it is off.
func (a *App) AdminHandler() http.Handler { return a.admin }

// HoldLaunches stops every pool from launching, for reason, until
// ReleaseLaunches; see scheduler.Hold.
func (a *App) HoldLaunches(reason string) { a.sched.Hold(reason) }

// ReleaseLaunches ends HoldLaunches.
func (a *App) ReleaseLaunches() { a.sched.Release() }

// RecycleIdle tears down idle runners on an image that was just rebuilt;
// see scheduler.RecycleIdle.
func (a *App) RecycleIdle(ctx context.Context, image string, at time.Time) error {
	return a.sched.RecycleIdle(ctx, image, at)
}

// Run serves on ln (and the admin listener, if configured) and runs the
// scheduler until ctx ends or one of them fails. On shutdown it stops
// accepting, lets requests in flight finish, and leaves running runners
// alone.
func (a *App) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           a.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	var adminLn net.Listener
	if a.admin != nil {
		var err error
		if a.adminCert != nil {
			adminLn, err = admin.ListenTLS(a.cfg.AdminListen, *a.adminCert)
		} else {
			adminLn, err = admin.Listen(a.cfg.AdminListen)
		}
		if err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		a.log.Info().Str("listen", ln.Addr().String()).Msg("serving webhooks")
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	if adminLn != nil {
		g.Go(func() error {
			a.log.Info().Str("listen", a.cfg.AdminListen).Bool("tls", a.adminCert != nil).Msg("serving the admin API")
			return admin.Serve(gctx, adminLn, a.admin)
		})
	}
	if a.replicas == nil {
		g.Go(func() error { return a.lead(gctx) })
	} else {
		g.Go(func() error { return a.replicas.Elector.Run(gctx, a.lead) })
		g.Go(func() error { return a.replicas.Listen(gctx, a.sched.Notify) })
	}
	return g.Wait()
}

// lead decides and acts until ctx ends: the scheduler, the redeliverer and
// the leader's other tasks. With replicas it runs for each term of this
// replica's leadership, and a new term starts from the state as a restart
// does (launches cut short are adopted or torn down).
func (a *App) lead(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.sched.Run(gctx) })
	if a.redel != nil {
		g.Go(func() error { return a.redel.Run(gctx) })
	}
	for _, task := range a.leaderTasks {
		if r := a.replicas; r != nil {
			task = r.Elector.Task(task)
		}
		g.Go(func() error { return task(gctx) })
	}
	return g.Wait()
}

// guardedDeliveries makes the redeliverer's calls only while this replica
// leads.
type guardedDeliveries struct {
	e     *leader.Elector
	inner redeliver.Deliveries
}

func (g guardedDeliveries) AppDeliveries(ctx context.Context, since time.Time) ([]fleet.AppDelivery, error) {
	ctx, cancel, err := g.e.Guard(ctx)
	defer cancel()
	if err != nil {
		return nil, err
	}
	return g.inner.AppDeliveries(ctx, since)
}

func (g guardedDeliveries) Redeliver(ctx context.Context, id int64) error {
	ctx, cancel, err := g.e.Guard(ctx)
	defer cancel()
	if err != nil {
		return err
	}
	return g.inner.Redeliver(ctx, id)
}

// LeaderStatus says which replica leads and since when.
type LeaderStatus struct {
	Replica string    `json:"replica"`        // this one
	Leader  string    `json:"leader"`         // the one that leads; empty when none does
	Since   time.Time `json:"since,omitzero"` // when it took the lead
	Leading bool      `json:"leading"`        // this one leads
}

// leaderStatus is nil for a lone replica.
func (a *App) leaderStatus(ctx context.Context) *LeaderStatus {
	r := a.replicas
	if r == nil {
		return nil
	}
	st := &LeaderStatus{Replica: r.Elector.Holder()}
	st.Leading, st.Since = r.Elector.Status()
	if st.Leading {
		st.Leader = st.Replica
		return st
	}
	if holder, since, err := r.Leader(ctx); err == nil {
		st.Leader, st.Since = holder, since
	}
	return st
}
