package ghapp

// The App itself, as doctor shows it: whether GitHub takes its JWT, and
// where its webhooks go.

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-github/v62/github"
)

// ErrBadCredentials is matched by App's and WebhookURL's error when GitHub
// refuses the App's JWT (401): github.app_id and github.private_key_file
// are not a pair GitHub knows.
var ErrBadCredentials = errors.New("GitHub refused the App's JWT")

// AppInfo is what GitHub says of the App.
type AppInfo struct {
	ID      int64
	Slug    string
	Name    string
	Owner   string // the account that owns it
	HTMLURL string // its page; HTMLURL + "/installations/new" installs it
}

// App reads the App with its JWT (GET /app).
func (c *Client) App(ctx context.Context) (AppInfo, error) {
	var a *github.App
	err := c.call(ctx, "get app", 0, true, func(ctx context.Context, gh *github.Client) (*github.Response, error) {
		var resp *github.Response
		var err error
		a, resp, err = gh.Apps.Get(ctx, "")
		return resp, err
	})
	if err != nil {
		return AppInfo{}, appError("read the App", err)
	}
	return AppInfo{ID: a.GetID(), Slug: a.GetSlug(), Name: a.GetName(), Owner: a.GetOwner().GetLogin(), HTMLURL: a.GetHTMLURL()}, nil
}

// WebhookURL reads where GitHub sends the App's webhooks
// (GET /app/hook/config).
func (c *Client) WebhookURL(ctx context.Context) (string, error) {
	var h *github.HookConfig
	err := c.call(ctx, "get app hook config", 0, true, func(ctx context.Context, gh *github.Client) (*github.Response, error) {
		var resp *github.Response
		var err error
		h, resp, err = gh.Apps.GetHookConfig(ctx)
		return resp, err
	})
	if err != nil {
		return "", appError("read the App's webhook config", err)
	}
	return h.GetURL(), nil
}

func appError(what string, err error) error {
	if statusOf(err) == http.StatusUnauthorized {
		return fmt.Errorf("%s: %w: %w", what, ErrBadCredentials, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
