package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

func openSQLite(t *testing.T, dir string) *Store {
	t.Helper()
	st, err := Open(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestRecordDedupesAndSurvivesReopen(t *testing.T) {
	eachBackend(t, testRecordDedupesAndSurvivesReopen)
}

func testRecordDedupesAndSurvivesReopen(t *testing.T, open func() *Store) {
	st := open()
	ctx := context.Background()
	d := fleet.Delivery{DeliveryID: "abc", Action: "queued", JobID: 1, Labels: []string{"self-hosted", "ünïcode"}, ReceivedAt: time.Now()}
	fresh, err := st.Record(ctx, d)
	if err != nil || !fresh {
		t.Fatalf("first record: fresh=%v err=%v", fresh, err)
	}
	if fresh, err = st.Record(ctx, d); err != nil || fresh {
		t.Fatalf("second record: fresh=%v err=%v", fresh, err)
	}
	st.Close()

	st = open()
	if fresh, err = st.Record(ctx, d); err != nil || fresh {
		t.Fatalf("after reopen: fresh=%v err=%v", fresh, err)
	}
	var got []fleet.Delivery
	err = st.View(ctx, func(tx fleet.Tx) error { got, err = tx.PendingDeliveries(10); return err })
	if err != nil || len(got) != 1 || got[0].Labels[1] != "ünïcode" {
		t.Fatalf("pending = %+v, %v", got, err)
	}
}

func TestGroupCommitUnderConcurrency(t *testing.T) { eachBackend(t, testGroupCommitUnderConcurrency) }

func testGroupCommitUnderConcurrency(t *testing.T, open func() *Store) {
	st := open()
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	freshCount := 0
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				// Every delivery id is sent by two writers.
				id := fmt.Sprintf("d-%d", (i/2)*50+j)
				fresh, err := st.Record(ctx, fleet.Delivery{DeliveryID: id, Action: "queued", JobID: int64(j)})
				if err != nil {
					t.Error(err)
					return
				}
				if fresh {
					mu.Lock()
					freshCount++
					mu.Unlock()
				}
			}
		}(i)
	}
	wg.Wait()
	n, err := st.CountDeliveries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 32*50 || freshCount != n {
		t.Fatalf("stored %d, fresh %d, want %d each", n, freshCount, 32*50)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	dir := t.TempDir()
	st := openSQLite(t, dir)
	st.Close()
	db, err := sql.Open("sqlite", "file:"+dir+"/state.db")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(context.Background(), dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("err = %v, want a refusal", err)
	}
}

func TestRejectsBadOptions(t *testing.T) {
	if _, err := Open(context.Background(), t.TempDir(), Options{Synchronous: "OFF"}); err == nil {
		t.Fatal("synchronous=OFF accepted")
	}
}

func TestPruneKeepsWhatIsStillNeeded(t *testing.T) { eachBackend(t, testPruneKeepsWhatIsStillNeeded) }

func testPruneKeepsWhatIsStillNeeded(t *testing.T, open func() *Store) {
	st := open()
	ctx := context.Background()
	old := time.Now().Add(-10 * 24 * time.Hour)
	err := st.Update(ctx, func(tx fleet.Tx) error {
		for _, j := range []fleet.Job{
			{ID: 1, State: fleet.JobCompleted, QueuedAt: old},
			{ID: 2, State: fleet.JobQueued, QueuedAt: old}, // still waiting: kept
			{ID: 3, State: fleet.JobCompleted, QueuedAt: time.Now()},
		} {
			if err := tx.PutJob(j); err != nil {
				return err
			}
			if err := tx.AddEvent(j.ID, j.QueuedAt, "queued", ""); err != nil {
				return err
			}
		}
		if err := tx.PutRunner(fleet.Runner{Name: "old", State: fleet.RunnerDeleted, CreatedAt: old}); err != nil {
			return err
		}
		return tx.PutRunner(fleet.Runner{Name: "live", State: fleet.RunnerBusy, CreatedAt: old}) // live: kept
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update(ctx, func(tx fleet.Tx) error { _, err := tx.Prune(time.Now().Add(-7 * 24 * time.Hour)); return err }); err != nil {
		t.Fatal(err)
	}
	err = st.View(ctx, func(tx fleet.Tx) error {
		if _, err := tx.Job(1); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("old completed job kept: %v", err)
		}
		for _, id := range []int64{2, 3} {
			if _, err := tx.Job(id); err != nil {
				t.Errorf("job %d pruned: %v", id, err)
			}
		}
		if _, err := tx.Runner("old"); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("old runner kept: %v", err)
		}
		if _, err := tx.Runner("live"); err != nil {
			t.Errorf("live runner pruned: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
