package fleettest

import (
	"context"
	"testing"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// Read returns what get reads from st in one view, failing the test on
// error: e.g. Read(t, st, func(tx fleet.Tx) (fleet.Job, error) { return tx.Job(1) }).
func Read[T any](t testing.TB, st fleet.State, get func(fleet.Tx) (T, error)) T {
	t.Helper()
	var v T
	err := st.View(context.Background(), func(tx fleet.Tx) error {
		var err error
		v, err = get(tx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}
