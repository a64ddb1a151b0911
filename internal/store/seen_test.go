package store

import (
	"context"
	"fmt"
	"testing"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

func TestSeenDeliveries(t *testing.T) { eachBackend(t, testSeenDeliveries) }

func testSeenDeliveries(t *testing.T, open func() *Store) {
	st := open()
	ctx := context.Background()

	got, err := st.SeenDeliveries(ctx, nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("no ids: %v, %v", got, err)
	}

	// More than two chunks, with recorded ids on both sides of each
	// chunk boundary, duplicates and an empty id.
	var ask []string
	want := map[string]bool{}
	for i := range 1203 {
		id := fmt.Sprintf("guid-%04d", i)
		ask = append(ask, id)
		if i%7 == 0 || i == seenChunk-1 || i == seenChunk || i == 2*seenChunk {
			if _, err := st.Record(ctx, fleet.Delivery{DeliveryID: id, Action: "queued", JobID: int64(i)}); err != nil {
				t.Fatal(err)
			}
			want[id] = true
		}
	}
	ask = append(ask, "guid-0000", "guid-0001", "", "unknown")
	got, err = st.SeenDeliveries(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d seen, want %d", len(got), len(want))
	}
	for id := range want {
		if !got[id] {
			t.Errorf("%s: recorded but not seen", id)
		}
	}
	if got["guid-0001"] || got["unknown"] || got[""] {
		t.Errorf("unrecorded ids reported seen: %v", got)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := st.SeenDeliveries(cctx, []string{"guid-0000"}); err == nil {
		t.Error("cancelled context: no error")
	}
}
