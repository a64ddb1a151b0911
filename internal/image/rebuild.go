package image

import (
	"context"
	"sync"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/rs/zerolog"
)

// Rebuild is an image the service rebuilds on a schedule.
type Rebuild struct {
	Spec    Spec
	Every   time.Duration
	Options Options
}

// BuildRecorder counts rebuilds; internal/metrics satisfies it.
type BuildRecorder interface {
	ImageBuild(image, result string)
}

// Rebuilder rebuilds images on their schedules. A failed build or smoke
// test keeps the old image (Build never moves the alias then), and is
// logged and counted.
type Rebuilder struct {
	Client  LXD
	Images  []Rebuild
	Metrics BuildRecorder // nil: not counted
	// Built is called after an image's alias moved to a new build, so that
	// idle runners on the old image can be recycled.
	Built func(name string, at time.Time)
	Clock fleet.Clock // the schedule, and each build's stamp; nil: the wall clock
	Log   zerolog.Logger
}

// Run rebuilds each image every Every until ctx ends. The first rebuild
// comes one interval after start: a restart does not rebuild everything.
func (r *Rebuilder) Run(ctx context.Context) error {
	if r.Clock == nil {
		r.Clock = fleet.WallClock
	}
	var wg sync.WaitGroup
	for _, img := range r.Images {
		if img.Every <= 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := r.Clock.NewTicker(img.Every)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C():
				}
				r.once(ctx, img)
			}
		}()
	}
	wg.Wait()
	return nil
}

func (r *Rebuilder) once(ctx context.Context, img Rebuild) {
	log := r.Log.With().Str("component", "image").Str("image", img.Spec.Name).Logger()
	began := r.Clock.Now()
	opts := img.Options
	if opts.Clock == nil {
		opts.Clock = r.Clock
	}
	res, err := Build(ctx, r.Client, img.Spec, opts)
	if err != nil {
		if ctx.Err() != nil {
			return // shutting down
		}
		log.Error().Err(err).Msg("image rebuild failed; the old image stays in use")
		if r.Metrics != nil {
			r.Metrics.ImageBuild(img.Spec.Name, "error")
		}
		return
	}
	log.Info().Str("alias", res.VersionedAlias).Str("fingerprint", res.Fingerprint).Dur("took", time.Since(began)).
		Msg("image rebuilt; new launches use it")
	if r.Metrics != nil {
		r.Metrics.ImageBuild(img.Spec.Name, "ok")
	}
	if r.Built != nil {
		r.Built(img.Spec.Name, began)
	}
}
