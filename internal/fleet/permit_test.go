package fleet_test

import (
	"context"
	"errors"
	"testing"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

func TestPermit(t *testing.T) {
	if err := fleet.Permitted(context.Background()); err != nil {
		t.Fatalf("no permit: %v, want allowed", err)
	}
	var outerErr, innerErr error
	ctx := fleet.WithPermit(context.Background(), func() error { return outerErr })
	ctx = fleet.WithPermit(ctx, func() error { return innerErr })
	ctx, cancel := context.WithCancel(ctx)
	cancel()
	detached := context.WithoutCancel(ctx) // a cleanup's context keeps the permit
	if err := fleet.Permitted(detached); err != nil {
		t.Fatalf("both allow: %v", err)
	}
	outerErr = fleet.ErrNotLeader
	if err := fleet.Permitted(detached); !errors.Is(err, fleet.ErrNotLeader) {
		t.Fatalf("the outer permit refuses: %v, want ErrNotLeader", err)
	}
	outerErr, innerErr = nil, errors.New("inner")
	if err := fleet.Permitted(detached); err != innerErr {
		t.Fatalf("the inner permit refuses: %v", err)
	}
}
