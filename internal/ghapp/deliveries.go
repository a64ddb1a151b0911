package ghapp

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-github/v62/github"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// AppDeliveries lists the App's webhook deliveries delivered at or after
// since, newest first (GitHub's order), paging with GitHub's cursor.
func (c *Client) AppDeliveries(ctx context.Context, since time.Time) ([]fleet.AppDelivery, error) {
	var out []fleet.AppDelivery
	opts := &github.ListCursorOptions{PerPage: c.pageSize}
	for page := 0; page < maxPages; page++ {
		var ds []*github.HookDelivery
		var cursor string
		err := c.call(ctx, "list app deliveries", 0, true, func(ctx context.Context, gh *github.Client) (*github.Response, error) {
			var resp *github.Response
			var err error
			ds, resp, err = gh.Apps.ListHookDeliveries(ctx, opts)
			if resp != nil {
				cursor = resp.Cursor
			}
			return resp, err
		})
		if err != nil {
			return nil, fmt.Errorf("list app webhook deliveries: %w", err)
		}
		for _, d := range ds {
			at := d.GetDeliveredAt().Time
			if !since.IsZero() && at.Before(since) {
				return out, nil // newest first: the rest are older
			}
			out = append(out, fleet.AppDelivery{
				ID: d.GetID(), GUID: d.GetGUID(), DeliveredAt: at, Redelivery: d.GetRedelivery(),
				Status: d.GetStatus(), StatusCode: d.GetStatusCode(), Event: d.GetEvent(), Action: d.GetAction(),
				InstallationID: d.GetInstallationID(), RepositoryID: d.GetRepositoryID(),
			})
		}
		if cursor == "" || cursor == opts.Cursor {
			return out, nil
		}
		opts.Cursor = cursor
	}
	return nil, fmt.Errorf("list app webhook deliveries: more than %d pages", maxPages)
}

// Redeliver asks GitHub to send a delivery again (same GUID, same payload).
// Not blindly retried: a duplicate redelivery is harmless but pointless.
func (c *Client) Redeliver(ctx context.Context, deliveryID int64) error {
	err := c.call(ctx, "redeliver", 0, false, func(ctx context.Context, gh *github.Client) (*github.Response, error) {
		_, resp, err := gh.Apps.RedeliverHookDelivery(ctx, deliveryID)
		// GitHub answers 202, which go-github reports as an AcceptedError.
		var accepted *github.AcceptedError
		if errors.As(err, &accepted) {
			err = nil
		}
		return resp, err
	})
	if err != nil {
		return fmt.Errorf("redeliver webhook delivery %d: %w", deliveryID, err)
	}
	return nil
}
