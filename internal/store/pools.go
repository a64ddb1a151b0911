package store

import "fmt"

// SetDrained marks a pool drained (no launches) or not.
func (t *Tx) SetDrained(pool string, drained bool) error {
	return t.setName("drained_pools", "drain pool", pool, drained)
}

// Drained returns the drained pools.
func (t *Tx) Drained() (map[string]bool, error) {
	return t.names("drained_pools", "drained pools")
}

// SetMemberDrained marks a cluster member drained (no launches there) or
// not.
func (t *Tx) SetMemberDrained(member string, drained bool) error {
	return t.setName("drained_members", "drain member", member, drained)
}

// DrainedMembers returns the drained cluster members.
func (t *Tx) DrainedMembers() (map[string]bool, error) {
	return t.names("drained_members", "drained members")
}

// setName adds name to, or removes it from, a one-column set table. table
// is one of ours, never input.
func (t *Tx) setName(table, what, name string, in bool) error {
	q := `DELETE FROM ` + table + ` WHERE name = ?`
	if in {
		q = `INSERT INTO ` + table + ` (name) VALUES (?) ON CONFLICT (name) DO NOTHING`
	}
	if _, err := t.exec(q, name); err != nil {
		return fmt.Errorf("%s %s: %w", what, name, err)
	}
	return nil
}

// names reads a one-column set table.
func (t *Tx) names(table, what string) (map[string]bool, error) {
	rows, err := t.query(`SELECT name FROM ` + table)
	names, err := collect(what, rows, err, func(row scanner) (string, error) {
		var n string
		return n, row.Scan(&n)
	})
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out, err
}
