package store

import (
	"fmt"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// PutInstallation keeps the latest word on an installation: an earlier
// one (a replica that wrote late, a listing older than a webhook) changes
// nothing.
func (t *Tx) PutInstallation(in fleet.Installation) error {
	_, err := t.exec(`INSERT INTO installations (id, login, state, at) VALUES (?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET login = excluded.login, state = excluded.state, at = excluded.at
		WHERE excluded.at >= installations.at`, in.ID, in.Login, string(in.State), ms(in.At))
	if err != nil {
		return fmt.Errorf("record installation %d: %w", in.ID, err)
	}
	return nil
}

// Installations returns every installation heard of, by id.
func (t *Tx) Installations() ([]fleet.Installation, error) {
	rows, err := t.query(`SELECT id, login, state, at FROM installations ORDER BY id`)
	return collect("installations", rows, err, func(row scanner) (fleet.Installation, error) {
		var in fleet.Installation
		var state string
		var at int64
		err := row.Scan(&in.ID, &in.Login, &state, &at)
		in.State, in.At = fleet.InstallationState(state), fromMS(at)
		return in, err
	})
}

// PutPrepared adds or replaces a prepared instance's row.
func (t *Tx) PutPrepared(p fleet.Prepared) error {
	_, err := t.exec(`INSERT INTO prepared_instances (name, pool, image, member, state, reason, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET pool = excluded.pool, image = excluded.image, member = excluded.member,
			state = excluded.state, reason = excluded.reason, created_at = excluded.created_at`,
		p.Name, p.Pool, p.Image, p.Member, string(p.State), p.Reason, ms(p.CreatedAt))
	if err != nil {
		return fmt.Errorf("put prepared instance %s: %w", p.Name, err)
	}
	return nil
}

// PreparedInstances returns the prepared instances, oldest first.
func (t *Tx) PreparedInstances() ([]fleet.Prepared, error) {
	rows, err := t.query(`SELECT name, pool, image, member, state, reason, created_at
		FROM prepared_instances ORDER BY created_at, name`)
	return collect("prepared instances", rows, err, func(row scanner) (fleet.Prepared, error) {
		var p fleet.Prepared
		var state string
		var at int64
		err := row.Scan(&p.Name, &p.Pool, &p.Image, &p.Member, &state, &p.Reason, &at)
		p.State, p.CreatedAt = fleet.PreparedState(state), fromMS(at)
		return p, err
	})
}

// DeletePrepared removes a prepared instance's row; a missing one is no
// error.
func (t *Tx) DeletePrepared(name string) error {
	if _, err := t.exec(`DELETE FROM prepared_instances WHERE name = ?`, name); err != nil {
		return fmt.Errorf("delete prepared instance %s: %w", name, err)
	}
	return nil
}
