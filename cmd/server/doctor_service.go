package main

// doctor's checks of the running service and of the webhook URL.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
)

// checkService asks the running service through its admin API, as the
// config says to reach it, and returns the client (nil when it cannot)
// and the last webhook it received (nil when none).
func (d *doctor) checkService(ctx context.Context) (*adminClient, *admin.Webhook) {
	t, err := adminFromConfig(d.path)
	if err != nil {
		d.skip("admin api", err.Error())
		d.skip("last webhook", "it is read through the admin API")
		return nil, nil
	}
	c, err := newAdminClient(t.addr, t.tokenFile, t.caFile)
	if err != nil {
		d.fail("admin api", err.Error(), "")
		d.skip("last webhook", "it is read through the admin API")
		return nil, nil
	}
	c.unanswered = "" // the fix below says what to do
	st, err := d.status(ctx, c)
	if err != nil {
		d.fail("admin api", err.Error(),
			"is the service running with this config? systemctl status lxd-gha-autoscaler; journalctl -u lxd-gha-autoscaler -n 50")
		d.skip("last webhook", "it is read through the admin API")
		return nil, nil
	}
	if st.Ready {
		d.ok("admin api", "%s answers: the service is ready", t.addr)
	} else {
		var why []string
		for k, v := range st.Checks {
			if v != admin.CheckOK {
				why = append(why, k+": "+v)
			}
		}
		slices.Sort(why)
		d.fail("admin api", t.addr+" answers: the service is not ready: "+strings.Join(why, "; "),
			"the service's log says more (journalctl -u lxd-gha-autoscaler -n 50)")
	}
	if w := st.LastWebhook; w != nil {
		d.ok("last webhook", "received at %s (%s)", adminStamp(w.At), w.Event)
	} else {
		d.warn("last webhook", "none received yet. The service has GitHub redeliver the ping it sent when the App was made "+
			"(within redeliver_interval of its start, if the App is less than 6 hours old); or send one through the proxy with --webhook-url URL")
	}
	return c, st.LastWebhook
}

func (d *doctor) status(ctx context.Context, c *adminClient) (admin.Status, error) {
	ctx, cancel := d.ctx(ctx)
	defer cancel()
	var st admin.Status
	body, err := c.call(ctx, http.MethodGet, "/api/status")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("admin API: status: %w", err)
	}
	return st.Printable(), nil
}

// checkWebhookURL sends a ping, signed with the config's webhook secret,
// to url: through the proxy to the service, which answers 204 and records
// it as its last webhook, after last. appURL is where GitHub sends the
// App's webhooks.
func (d *doctor) checkWebhookURL(ctx context.Context, cfg *config, url, appURL string, c *adminClient, last *admin.Webhook) {
	if url == "" {
		if appURL != "" {
			d.skip("webhook url", "pass --webhook-url "+appURL+" (the App's, at GitHub) to send it a signed ping through the proxy")
		} else {
			d.skip("webhook url", "pass --webhook-url URL to send a signed ping through the proxy")
		}
		return
	}
	if appURL != "" && appURL != url {
		d.warn("webhook url", "GitHub sends the App's webhooks to "+appURL+", not "+url+": change it in the App's settings (General: Webhook URL) if "+url+" is right")
	}
	code, err := d.ping(ctx, url, cfg.App.WebhookSecret)
	switch {
	case err != nil:
		d.fail("webhook url", err.Error(), "is the host name right, the port open in the firewall, and the proxy's certificate valid for it?")
		return
	case code == http.StatusUnauthorized:
		d.fail("webhook url", fmt.Sprintf("%s answered 401 to a ping signed with the secret in github.webhook_secret_file", url),
			"the service there has another secret: restart it after changing the file, or point the proxy at this one")
		return
	case code == http.StatusNotFound || code == http.StatusMethodNotAllowed:
		d.fail("webhook url", fmt.Sprintf("%s answered %d", url, code), "the proxy does not forward POST /webhook to the service (see deployments/proxy)")
		return
	case code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout:
		d.fail("webhook url", fmt.Sprintf("%s answered %d", url, code), "the proxy cannot reach the service at "+cfg.Listen+" (listen): is it running?")
		return
	case code != http.StatusNoContent:
		d.fail("webhook url", fmt.Sprintf("%s answered %d to a signed ping, not 204", url, code), "")
		return
	}
	if c == nil {
		d.ok("webhook url", "%s answered a signed ping with 204 (not checked that this service took it: no admin API)", url)
		return
	}
	st, err := d.status(ctx, c)
	switch w := st.LastWebhook; {
	case err != nil:
		d.fail("webhook url", url+" answered 204, and then the admin API did not: "+err.Error(), "")
	case w == nil || w.Event != "ping" || (last != nil && !w.At.After(last.At)):
		d.fail("webhook url", url+" answered a signed ping with 204, but this service did not receive it",
			"the URL reaches another service: check the proxy's target and the host name's address")
	default:
		d.ok("webhook url", "%s answered a signed ping with 204, and the service recorded it", url)
	}
}

// ping posts a ping as GitHub sends one, signed with secret, and returns
// the status. It follows no redirect, as GitHub does not.
func (d *doctor) ping(ctx context.Context, url string, secret []byte) (int, error) {
	ctx, cancel := d.ctx(ctx)
	defer cancel()
	body := []byte(`{"zen":"Checked by lxd-gha-autoscaler doctor.","hook_id":0}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("--webhook-url %q: %w", url, err)
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "lxd-gha-autoscaler-doctor")
	req.Header.Set("X-GitHub-Event", "ping")
	req.Header.Set("X-GitHub-Delivery", hex.EncodeToString(id))
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(m.Sum(nil)))
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}
