package store

import (
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// HeardWebhook keeps the latest webhook with a valid signature: an older
// time (a replica that wrote late) changes nothing.
func (t *Tx) HeardWebhook(event string, at time.Time) error {
	_, err := t.exec(`INSERT INTO last_webhook (id, event, at) VALUES (1, ?, ?)
		ON CONFLICT (id) DO UPDATE SET event = excluded.event, at = excluded.at
		WHERE excluded.at > last_webhook.at`, event, ms(at))
	if err != nil {
		return fmt.Errorf("record webhook heard: %w", err)
	}
	return nil
}

// LastWebhook returns the latest webhook recorded; zero when none.
func (t *Tx) LastWebhook() (fleet.Webhook, error) {
	var w fleet.Webhook
	var at int64
	err := t.queryRow(`SELECT event, at FROM last_webhook WHERE id = 1`).Scan(&w.Event, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return fleet.Webhook{}, nil
	}
	if err != nil {
		return fleet.Webhook{}, fmt.Errorf("last webhook: %w", err)
	}
	w.At = fromMS(at)
	return w, nil
}
