// Package app wires the webhook handler, the state store, the scheduler,
// the redeliverer, metrics and the admin API into one service. It takes
// built dependencies; it reads no files and no environment.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/metrics"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/redeliver"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/scheduler"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/webhook"
)

// Config is what the service needs beyond its dependencies.
type Config struct {
	WebhookSecret []byte
	Scheduler     scheduler.Config
	Redeliver     redeliver.Config
	// AdminListen is "unix:/path" or "host:port" for the admin API and
	// status page; empty turns them off. Never the webhook's listener.
	AdminListen     string
	AdminToken      string        // required when AdminListen is TCP off loopback
	ShutdownTimeout time.Duration // for requests in flight; default 10s
}

// Deps are the service's built dependencies.
type Deps struct {
	Store     *store.Store
	Instances scheduler.Instances
	GitHub    scheduler.GitHub
	// Deliveries lists and redelivers the App's webhook deliveries; nil
	// turns the recovery of missed webhooks off.
	Deliveries redeliver.Deliveries
	// Readiness checks besides the state database; each returns nil when
	// healthy. LXD: the daemon answers. GitHub: a token can be had.
	CheckLXD    func(context.Context) error
	CheckGitHub func(ctx context.Context, installationID int64) error
	Metrics     *metrics.Metrics // nil: no metrics
	Clock       scheduler.Clock  // nil: the wall clock
	Log         zerolog.Logger
}

// App is the running service.
type App struct {
	cfg       Config
	Store     *store.Store
	Sched     *scheduler.Scheduler
	redel     *redeliver.Redeliverer // nil when off
	instances scheduler.Instances
	ready     *readiness
	mux       http.Handler
	admin     http.Handler
	log       zerolog.Logger
}

// New builds the service.
func New(cfg Config, d Deps) (*App, error) {
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.AdminListen != "" && admin.RequiresToken(cfg.AdminListen) && cfg.AdminToken == "" {
		return nil, fmt.Errorf("admin listener %s is reachable from other hosts: set an admin token", cfg.AdminListen)
	}
	log := d.Log
	inst := d.Instances
	if d.Metrics != nil {
		inst = metrics.InstrumentInstances(inst, d.Metrics)
	}
	sched, err := scheduler.New(cfg.Scheduler, d.Store, inst, d.GitHub, d.Clock, log)
	if err != nil {
		return nil, err
	}
	hook, err := webhook.New(cfg.WebhookSecret, d.Store, sched.Notify, log)
	if err != nil {
		return nil, err
	}
	if d.Metrics != nil {
		sched.SetMetrics(d.Metrics)
		hook.SetMetrics(d.Metrics)
	}
	var redel *redeliver.Redeliverer
	if d.Deliveries != nil {
		var now func() time.Time
		if d.Clock != nil {
			now = d.Clock.Now
		}
		redel, err = redeliver.New(cfg.Redeliver, d.Deliveries, d.Store, now, log)
		if err != nil {
			return nil, err
		}
	}
	a := &App{
		cfg: cfg, Store: d.Store, Sched: sched, redel: redel, instances: inst,
		ready: newReadiness(d.Store, d.CheckLXD, d.CheckGitHub),
		log:   log.With().Str("component", "app").Logger(),
	}
	if d.Metrics != nil {
		d.Metrics.SetStateSource(a.stateSource)
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
		ah := admin.NewHandler(backend{a: a}, admin.Options{Token: cfg.AdminToken, Log: log})
		am := http.NewServeMux()
		am.Handle("/", ah)
		am.HandleFunc("GET /readyz", a.ready.ServeHTTP)
		if d.Metrics != nil {
			am.Handle("GET /metrics", d.Metrics.Handler())
		}
		a.admin = am
	}
	return a, nil
}

// Handler is the webhook listener's HTTP handler.
func (a *App) Handler() http.Handler { return a.mux }

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
		if adminLn, err = admin.Listen(a.cfg.AdminListen); err != nil {
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
			a.log.Info().Str("listen", a.cfg.AdminListen).Msg("serving the admin API")
			return admin.Serve(gctx, adminLn, a.admin)
		})
	}
	g.Go(func() error { return a.Sched.Run(gctx) })
	if a.redel != nil {
		g.Go(func() error { return a.redel.Run(gctx) })
	}
	return g.Wait()
}
