package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/app"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghapp"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/image"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/leader"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/metrics"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store"
)

func newLogger(w io.Writer, format, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	// Millisecond timestamps: launches and teardowns take well under a second.
	zerolog.TimeFieldFormat = time.RFC3339Nano
	switch format {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	default:
		return zerolog.Nop(), fmt.Errorf("log format %q: want json or console", format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// gcPercent is the garbage collector's target unless GOGC says otherwise.
// Decoding a workflow_job payload into go-github's event allocates about
// 37 KB, most of it garbage at once, while the live heap stays small: at
// Go's default of 100 the collector took about a tenth of the webhook
// path's CPU, and p99 missed 10 ms in two of three load runs. 400 costs
// about 11 MB of RSS under that load (see the README's figures).
const gcPercent = 400

// memoryLimit is the Go runtime's soft memory limit unless GOMEMLIMIT says
// otherwise. With GOGC at 400 the heap may grow to five times what is live
// before the next collection, and anyone can make what is live grow for a
// moment (connections, bodies being read). Near the limit the collector
// runs sooner instead. The service needs about 50 MB under load; the
// systemd unit's MemoryMax= (512M) is the hard stop above this.
const memoryLimit = 128 << 20

// serve runs the service until ctx ends.
func serve(ctx context.Context, cfg *config, log zerolog.Logger) error {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	for _, w := range cfg.Warnings {
		log.Warn().Msg(w)
	}
	m := metrics.New(version)
	ghCfg := cfg.GitHub
	ghCfg.Transport = metrics.GitHubTransport(nil, m)
	gh, err := ghapp.New(ghCfg, log)
	if err != nil {
		return err
	}
	// Before anything else: the runner groups are what GitHub enforces.
	unchecked, err := startGroupCheck(ctx, cfg, gh, log)
	if err != nil {
		return err
	}
	st, err := openState(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	lcfg := cfg.LXD
	lcfg.Log = log
	lx, err := lxd.Connect(ctx, lcfg)
	if err != nil {
		return err
	}
	log.Info().Str("lxd", lx.Address()).Msg("lxd connected")
	var replicas *app.Replicas
	if cfg.Database != "" {
		if replicas, err = newReplicas(st, m, log); err != nil {
			return err
		}
	}
	var a *app.App
	var leaderTasks []func(context.Context) error
	if len(cfg.Rebuilds) > 0 {
		// Background rebuilds, by the leader only; new launches use a new
		// image as soon as its alias moves, and idle runners on the old
		// one are recycled.
		rb := &image.Rebuilder{Client: lx, Images: cfg.Rebuilds, Metrics: m, Clock: fleet.WallClock, Log: log,
			Built: func(name string, at time.Time) {
				if err := a.RecycleIdle(ctx, name, at); err != nil {
					log.Error().Err(err).Str("image", name).Msg("recycle idle runners")
				}
			}}
		leaderTasks = append(leaderTasks, rb.Run)
	}
	if unchecked != nil {
		leaderTasks = append(leaderTasks, func(ctx context.Context) error { return awaitRunnerGroups(ctx, cfg, gh, a, log) })
	}
	a, err = app.New(cfg.App, app.Deps{
		State: st, Instances: lx, Cluster: lx, GitHub: gh, Deliveries: gh, Metrics: m, Log: log,
		CheckLXD: lx.Ping, CheckGitHub: gh.CheckToken,
		Replicas: replicas, LeaderTasks: leaderTasks,
	})
	if err != nil {
		return err
	}
	if unchecked != nil {
		a.HoldLaunches("runner groups not checked at GitHub yet (" + unchecked.Error() + ")")
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ev := log.Info().Str("version", version).Int("pools", len(cfg.App.Scheduler.Pools))
	if replicas != nil {
		ev = ev.Str("state", "postgresql").Str("replica", replicas.Elector.Holder())
	} else {
		ev = ev.Str("state_dir", cfg.StateDir)
	}
	ev.Msg("starting")
	err = a.Run(ctx, ln)
	log.Info().Msg("stopped")
	return err
}

// openState opens the PostgreSQL state when the config names a database,
// else the SQLite state in state_dir.
func openState(ctx context.Context, cfg *config) (*store.Store, error) {
	if cfg.Database != "" {
		return store.OpenPostgres(ctx, cfg.Database, cfg.DatabasePassword, store.Options{})
	}
	return store.Open(ctx, cfg.StateDir, store.Options{})
}

// newReplicas makes this process one of the replicas sharing st: it
// campaigns for the lease, and while it leads, writes through the fence.
func newReplicas(st *store.Store, m *metrics.Metrics, log zerolog.Logger) (*app.Replicas, error) {
	leases, err := st.Leases()
	if err != nil {
		return nil, err
	}
	holder := leader.DefaultHolder()
	fence := st.Fence(holder)
	el := leader.New(leader.Config{Holder: holder}, leases, fleet.WallClock, m, fence.SetEpoch, log)
	return &app.Replicas{
		Elector: el,
		Fenced:  fence,
		Listen:  st.Listen,
		Leader: func(ctx context.Context) (string, time.Time, error) {
			l, err := leases.Leader(ctx)
			if err != nil || !l.Valid {
				return "", time.Time{}, err
			}
			return l.Holder, l.Since, nil
		},
	}, nil
}
