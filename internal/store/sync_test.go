package store

import (
	"context"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// A webhook's delivery is committed with an fsync (synchronous=FULL)
// whatever the scheduler's last Update left the connection at; Update
// commits with NORMAL and flushes the log after releasing the connection.
// A store opened with NORMAL never syncs harder.
func TestSynchronousPerWrite(t *testing.T) {
	ctx := context.Background()
	// SQLite's numbers: 1 is NORMAL, 2 is FULL.
	current := func(t *testing.T, st *Store) int {
		t.Helper()
		var n int
		if err := st.db.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	record := func(t *testing.T, st *Store, id string) {
		t.Helper()
		if _, err := st.Record(ctx, fleet.Delivery{DeliveryID: id, Action: "queued", JobID: 1, ReceivedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	update := func(t *testing.T, st *Store) (inside int) {
		t.Helper()
		err := st.Update(ctx, func(tx fleet.Tx) error {
			return tx.(*Tx).tx.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&inside)
		})
		if err != nil {
			t.Fatal(err)
		}
		return inside
	}

	st := openSQLite(t, t.TempDir())
	defer st.Close()
	if n := update(t, st); n != 1 {
		t.Fatalf("Update ran with synchronous=%d, want 1 (NORMAL)", n)
	}
	record(t, st, "a")
	if n := current(t, st); n != 2 {
		t.Fatalf("a delivery was committed with synchronous=%d after an Update, want 2 (FULL)", n)
	}

	relaxed, err := Open(ctx, t.TempDir(), Options{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer relaxed.Close()
	record(t, relaxed, "b")
	if n := current(t, relaxed); n != 1 {
		t.Fatalf("a NORMAL store committed with synchronous=%d", n)
	}
}
