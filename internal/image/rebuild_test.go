package image

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
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

func TestRebuilderSchedulesAndReports(t *testing.T) {
	rec := &countingRecorder{got: map[string]int{}}
	var mu sync.Mutex
	var built []string
	fail := true
	r := &Rebuilder{
		Images:  []Rebuild{{Spec: Spec{Name: "img"}, Every: 10 * time.Millisecond}, {Spec: Spec{Name: "never"}}},
		Metrics: rec,
		Built: func(name string, _ time.Time) {
			mu.Lock()
			built = append(built, name)
			mu.Unlock()
		},
		Log: zerolog.Nop(),
		build: func(_ context.Context, _ LXD, s Spec, _ Options) (Result, error) {
			mu.Lock()
			defer mu.Unlock()
			if fail { // the first build fails: nothing may be recycled for it
				fail = false
				return Result{}, errors.New("smoke test failed")
			}
			return Result{Fingerprint: "abc", VersionedAlias: s.Name + "-1"}, nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec.mu.Lock()
		ok := rec.got["img ok"] >= 1 && rec.got["img error"] == 1
		rec.mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("builds counted: %v", rec.got)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(built) != rec.got["img ok"] || rec.got["never ok"]+rec.got["never error"] != 0 {
		t.Fatalf("built callbacks %v for counts %v", built, rec.got)
	}
}
