package store

import (
	"context"
	"fmt"
	"strings"
)

// seenChunk bounds the placeholders per query, well under SQLite's limit on
// bound variables (999 in older builds).
const seenChunk = 500

// SeenDeliveries reports which of these delivery ids (X-GitHub-Delivery) are
// recorded. Only recorded ids are in the map; empty ids are never recorded.
func (s *Store) SeenDeliveries(ctx context.Context, guids []string) (map[string]bool, error) {
	seen := make(map[string]bool)
	want := make([]string, 0, len(guids))
	dup := make(map[string]bool, len(guids))
	for _, g := range guids {
		if g != "" && !dup[g] {
			dup[g] = true
			want = append(want, g)
		}
	}
	for len(want) > 0 {
		chunk := want[:min(len(want), seenChunk)]
		want = want[len(chunk):]
		if err := s.seenIn(ctx, chunk, seen); err != nil {
			return nil, fmt.Errorf("seen deliveries: %w", err)
		}
	}
	return seen, nil
}

func (s *Store) seenIn(ctx context.Context, guids []string, seen map[string]bool) error {
	args := make([]any, len(guids))
	for i, g := range guids {
		args[i] = g
	}
	q := `SELECT delivery_id FROM deliveries WHERE delivery_id IN (?` + strings.Repeat(`, ?`, len(guids)-1) + `)`
	rows, err := s.db.QueryContext(ctx, s.d.bind(q), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		seen[id] = true
	}
	return rows.Err()
}
