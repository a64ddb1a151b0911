package image

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
)

type countingRecorder struct {
	mu  sync.Mutex
	got map[string]int
}

func (c *countingRecorder) ImageBuild(image, result string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got[image+" "+result]++
}

func (c *countingRecorder) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[key]
}

// TestRebuilderSchedulesAndReports rebuilds into the in-memory LXD: the
// first build fails its smoke test, which is logged and counted and
// recycles nothing, and the Rebuilder keeps going; an image with no
// interval is never built.
func TestRebuilderSchedulesAndReports(t *testing.T) {
	f := newFakeLXD()
	spec := fakeSpec(t, f)
	var mu sync.Mutex
	smokes := 0
	f.exec = func(ctx context.Context, inst *fakeInstance, argv []string) (string, int, error) {
		if slices.Contains(argv, "is-enabled") {
			mu.Lock()
			smokes++
			first := smokes == 1
			mu.Unlock()
			if first {
				return "disabled", 1, nil
			}
		}
		return healthyExec(ctx, inst, argv)
	}
	clock := fleettest.NewClock(fakeNow)
	never := spec
	never.Name = "never"

	rec := &countingRecorder{got: map[string]int{}}
	logs := &fleettest.LogBuffer{}
	var built []string
	r := &Rebuilder{
		Client: f,
		Images: []Rebuild{
			{Spec: spec, Every: time.Second}, // a second a build: versioned aliases differ
			{Spec: never},
		},
		Metrics: rec,
		Built: func(name string, _ time.Time) {
			mu.Lock()
			built = append(built, name)
			mu.Unlock()
		},
		Clock: clock,
		Log:   zerolog.New(logs),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for rec.count("linux ok") < 2 || rec.count("linux error") < 1 {
		if time.Now().After(deadline) {
			cancel()
			<-done
			rec.mu.Lock()
			defer rec.mu.Unlock()
			t.Fatalf("builds counted: %v", rec.got)
		}
		clock.Advance(time.Second) // the next scheduled rebuild, once the last is done
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	if n := rec.count("linux error"); n != 1 {
		t.Errorf("%d failed builds counted, want 1", n)
	}
	if ok := rec.count("linux ok"); len(built) != ok || slices.ContainsFunc(built, func(n string) bool { return n != "linux" }) {
		t.Errorf("built callbacks %v for %d good builds", built, ok)
	}
	if n := rec.count("never ok") + rec.count("never error"); n != 0 || len(f.called("launch never-")) != 0 {
		t.Errorf("an image with no interval was built")
	}
	if !strings.Contains(logs.String(), `"image":"linux"`) || !strings.Contains(logs.String(), "image rebuild failed; the old image stays in use") {
		t.Errorf("the failed build was not logged:\n%s", logs)
	}
	imgs := f.imagesNamed("linux")
	if fp := f.alias("linux"); !slices.Contains(imgs, fp) || len(imgs) > spec.Keep {
		t.Errorf("alias -> %s, images %v", fp, imgs)
	}
}
