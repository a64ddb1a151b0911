package store

import "fmt"

// SetDrained marks a pool drained (no launches) or not.
func (t *Tx) SetDrained(pool string, drained bool) error {
	q := `DELETE FROM drained_pools WHERE name = ?`
	if drained {
		q = `INSERT INTO drained_pools (name) VALUES (?) ON CONFLICT (name) DO NOTHING`
	}
	if _, err := t.exec(q, pool); err != nil {
		return fmt.Errorf("drain pool %s: %w", pool, err)
	}
	return nil
}

// Drained returns the drained pools.
func (t *Tx) Drained() (map[string]bool, error) {
	rows, err := t.query(`SELECT name FROM drained_pools`)
	names, err := collect("drained pools", rows, err, func(row scanner) (string, error) {
		var n string
		return n, row.Scan(&n)
	})
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out, err
}

// SetMemberDrained marks a cluster member drained (no launches there) or
// not.
func (t *Tx) SetMemberDrained(member string, drained bool) error {
	q := `DELETE FROM drained_members WHERE name = ?`
	if drained {
		q = `INSERT INTO drained_members (name) VALUES (?) ON CONFLICT (name) DO NOTHING`
	}
	if _, err := t.exec(q, member); err != nil {
		return fmt.Errorf("drain member %s: %w", member, err)
	}
	return nil
}

// DrainedMembers returns the drained cluster members.
func (t *Tx) DrainedMembers() (map[string]bool, error) {
	rows, err := t.query(`SELECT name FROM drained_members`)
	names, err := collect("drained members", rows, err, func(row scanner) (string, error) {
		var n string
		return n, row.Scan(&n)
	})
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out, err
}
