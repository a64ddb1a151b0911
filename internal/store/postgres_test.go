package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store/pgtest"
)

// Two replicas on one database take the same deliveries at once, as when
// GitHub's delivery and its redelivery land on different replicas: each is
// recorded once, and exactly one replica is told it was fresh.
func TestTwoReplicasRecordEachDeliveryOnce(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	ctx := context.Background()
	a := mustOpen(t)(OpenPostgres(ctx, url, "", Options{}))
	b := mustOpen(t)(OpenPostgres(ctx, url, "", Options{}))
	const n = 1000
	var fresh atomic.Int64
	var wg sync.WaitGroup
	for _, st := range []*Store{a, b, a, b} {
		wg.Go(func() {
			for i := range n {
				f, err := st.Record(ctx, fleet.Delivery{DeliveryID: fmt.Sprint("d", i), Action: fleet.ActionQueued, JobID: int64(i)})
				if err != nil {
					t.Error(err)
					return
				}
				if f {
					fresh.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got, err := a.CountDeliveries(ctx); err != nil || got != n || fresh.Load() != n {
		t.Fatalf("stored %d (%v), fresh %d; want %d each", got, err, fresh.Load(), n)
	}
}

func TestPostgresRefusesNewerSchema(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	ctx := context.Background()
	mustOpen(t)(OpenPostgres(ctx, url, "", Options{})).Close()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`INSERT INTO schema_version (version) VALUES (99)`); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPostgres(ctx, url, "", Options{}); !errors.Is(err, errNewerSchema) {
		t.Fatalf("open = %v, want a refusal", err)
	}
}

func TestPostgresBadURLKeepsThePasswordOut(t *testing.T) {
	_, err := OpenPostgres(context.Background(), "postgres://u:s3cr3t@h:notaport/db", "", Options{})
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("err = %v: want an error without the password", err)
	}
}

// A delivery recorded on one replica wakes the leader listening on
// another; a duplicate wakes nobody.
func TestListenWakesOnFreshDeliveries(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := mustOpen(t)(OpenPostgres(ctx, url, "", Options{}))
	b := mustOpen(t)(OpenPostgres(ctx, url, "", Options{}))
	woken := make(chan struct{}, 16)
	listening := make(chan struct{})
	var once sync.Once
	go b.Listen(ctx, func() {
		once.Do(func() { close(listening) }) // the first wake-up says it listens
		woken <- struct{}{}
	})
	<-listening
	<-woken
	d := fleet.Delivery{DeliveryID: "x1", Action: fleet.ActionQueued, JobID: 1}
	if _, err := a.Record(ctx, d); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woken:
	case <-time.After(10 * time.Second):
		t.Fatal("the listener was not woken by a fresh delivery")
	}
	if fresh, err := a.Record(ctx, d); err != nil || fresh {
		t.Fatalf("duplicate: fresh=%v err=%v", fresh, err)
	}
	select {
	case <-woken:
		t.Fatal("a duplicate woke the listener")
	case <-time.After(300 * time.Millisecond):
	}
}

// A leader frozen (SIGSTOP) inside a fenced transaction holds the lease
// row's lock, and a takeover waits for it. The server ends such a
// transaction within the lease time, so a follower takes over while the
// leader is still frozen, and the frozen write never commits.
func TestTakeoverPastAFrozenTransaction(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	ctx := context.Background()
	a := mustOpen(t)(OpenPostgres(ctx, url, "", Options{}))
	b := mustOpen(t)(OpenPostgres(ctx, url, "", Options{}))
	la, err := a.Leases()
	if err != nil {
		t.Fatal(err)
	}
	lb, _ := b.Leases()
	const ttl = time.Second
	epoch, ok, err := la.TryLead(ctx, "a", ttl)
	if err != nil || !ok {
		t.Fatalf("a takes the lease: %v %v", ok, err)
	}
	fence := a.Fence("a")
	fence.SetEpoch(epoch)
	inside, thaw := make(chan struct{}), make(chan struct{})
	frozen := make(chan error, 1)
	go func() {
		frozen <- fence.Update(ctx, func(tx fleet.Tx) error {
			close(inside)
			<-thaw
			return tx.SetDrained("linux", true)
		})
	}()
	<-inside
	start := time.Now()
	for {
		if _, ok, _ := lb.TryLead(ctx, "b", ttl); ok {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatal("b never took the lease")
		}
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(start)
	close(thaw)
	if err := <-frozen; err == nil {
		t.Error("the frozen leader's write committed after the takeover")
	}
	// Within twice the service's lease time (3 s): a leader stopped that
	// long must have been replaced.
	if took > 6*time.Second {
		t.Fatalf("the takeover waited %v for the frozen transaction", took)
	}
	t.Logf("takeover past a frozen transaction after %v", took.Round(time.Millisecond))
}

// The leader's own transactions under way never hold up its renewal, but
// they do hold up a takeover until they end: an old term cannot write once
// a new one has begun.
func TestLeaseLocks(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	ctx := context.Background()
	st := mustOpen(t)(OpenPostgres(ctx, url, "", Options{}))
	leases, err := st.Leases()
	if err != nil {
		t.Fatal(err)
	}
	epoch, ok, err := leases.TryLead(ctx, "a", time.Second)
	if err != nil || !ok {
		t.Fatalf("TryLead = %v, %v", ok, err)
	}
	fence := st.Fence("a")
	fence.SetEpoch(epoch)
	inside, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- fence.Update(ctx, func(fleet.Tx) error { close(inside); <-release; return nil })
	}()
	<-inside
	start := time.Now()
	if err := leases.Renew(ctx, "a", epoch, 300*time.Millisecond); err != nil {
		t.Fatalf("renew during the leader's own transaction: %v", err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Fatalf("the renewal waited %v for the leader's transaction", took)
	}
	time.Sleep(400 * time.Millisecond) // the lease expires, the transaction still open
	if _, ok, err := leases.TryLead(ctx, "b", time.Second); ok || err == nil {
		t.Fatalf("a takeover went through while the old term's transaction was open: ok=%v err=%v", ok, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, ok, err := leases.TryLead(ctx, "b", time.Second); !ok || err != nil {
		t.Fatalf("takeover after the old transaction ended: ok=%v err=%v", ok, err)
	}
}
