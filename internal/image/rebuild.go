package image

import (
	"context"
	"sync"
	"time"

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
	Log   zerolog.Logger
	// build is Build; tests replace it.
	build func(context.Context, LXD, Spec, Options) (Result, error)
}

// Run rebuilds each image every Every until ctx ends. The first rebuild
// comes one interval after start: a restart does not rebuild everything.
func (r *Rebuilder) Run(ctx context.Context) error {
	build := r.build
	if build == nil {
		build = Build
	}
	var wg sync.WaitGroup
	for _, img := range r.Images {
		if img.Every <= 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(img.Every)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				r.once(ctx, build, img)
			}
		}()
	}
	wg.Wait()
	return nil
}

func (r *Rebuilder) once(ctx context.Context, build func(context.Context, LXD, Spec, Options) (Result, error), img Rebuild) {
	log := r.Log.With().Str("component", "image").Str("image", img.Spec.Name).Logger()
	began := time.Now()
	res, err := build(ctx, r.Client, img.Spec, img.Options)
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
