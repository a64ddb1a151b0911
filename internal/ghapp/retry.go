package ghapp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v62/github"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// RateLimitError is returned when GitHub rate-limited a call and the wait
// was too long (beyond ~1 min or the context's deadline). Use errors.As.
type RateLimitError struct {
	RetryAt time.Time // when GitHub said to try again
	Err     error     // GitHub's answer
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("github rate limit: retry at %s (in %s)",
		e.RetryAt.UTC().Format(time.RFC3339), time.Until(e.RetryAt).Round(time.Second))
}

func (e *RateLimitError) Unwrap() error { return e.Err }

// RetryAfter is when the limit lifts, by the wall clock.
func (e *RateLimitError) RetryAfter() time.Time { return e.RetryAt }

type retryPolicy struct {
	attempts    int           // tries for network errors and 5xx
	base, cap   time.Duration // exponential backoff
	maxRateWait time.Duration // longest rate-limit wait done in place
	rateWaits   int           // rate-limit waits per call
}

var defaultRetryPolicy = retryPolicy{
	attempts:    4,
	base:        250 * time.Millisecond,
	cap:         5 * time.Second,
	maxRateWait: time.Minute,
	rateWaits:   3,
}

// backoff is the wait before retry attempt (1-based): half fixed, half
// jitter, so concurrent callers spread out.
func (p retryPolicy) backoff(attempt int) time.Duration {
	return fleet.Backoff(attempt-1, p.base, p.cap)
}

type failureKind int

const (
	permanent failureKind = iota
	transient             // network error, timeout or 5xx
	rateLimited
	unauthorized // the installation token was rejected
)

type verdict struct {
	kind    failureKind
	sent    bool // the API request may have reached GitHub
	status  int
	retryAt time.Time
}

// call runs fn with a per-attempt timeout, retrying what is safe to retry:
// network errors and 5xx only when idempotent or when the request surely
// never left (token refresh failed, dial failed); rate limits after the
// wait GitHub asks for, if short; a rejected token once, with a fresh one.
// installationID 0 means the App itself (JWT).
func (c *Client) call(ctx context.Context, op string, installationID int64, idempotent bool,
	fn func(ctx context.Context, gh *github.Client) (*github.Response, error)) error {
	rateWaits, reauth := 0, false
	for attempt := 1; ; attempt++ {
		gh := c.app
		if installationID != 0 {
			gh = c.installation(installationID)
		}
		actx, cancel := context.WithTimeout(ctx, c.timeout)
		_, err := fn(actx, gh)
		attemptTimedOut := actx.Err() != nil
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		v := classify(err, attemptTimedOut)
		log := c.log.With().Str("op", op).Int("attempt", attempt).Int("status_code", v.status).
			Int64("installation_id", installationID).Logger()
		var wait time.Duration
		switch v.kind {
		case permanent:
			return err
		case unauthorized:
			if installationID == 0 || reauth {
				return err
			}
			// GitHub can revoke tokens early; ghinstallation would keep
			// using it until it nears expiry.
			reauth = true
			c.forget(installationID)
			log.Warn().Err(err).Msg("github rejected the installation token; retrying with a new one")
			continue
		case rateLimited:
			wait = max(time.Until(v.retryAt), 0) + rand.N(250*time.Millisecond)
			limit := c.retry.maxRateWait
			if dl, ok := ctx.Deadline(); ok {
				limit = min(limit, time.Until(dl))
			}
			if wait > limit || rateWaits >= c.retry.rateWaits {
				return &RateLimitError{RetryAt: v.retryAt, Err: err}
			}
			rateWaits++
			log.Warn().Err(err).Dur("retry_in", wait).Msg("github rate limit; waiting")
		case transient:
			if !idempotent && v.sent {
				return err
			}
			if attempt >= c.retry.attempts {
				return fmt.Errorf("after %d attempts: %w", attempt, err)
			}
			wait = c.retry.backoff(attempt)
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
				return err
			}
			log.Warn().Err(err).Dur("retry_in", wait).Msg("github call failed; retrying")
		}
		if err := c.sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// classify decides what a failed call means. go-github returns *ErrorResponse
// for HTTP errors, *RateLimitError / *AbuseRateLimitError for 403 rate limits
// (also synthesized without a request while it remembers a limit), and
// transport errors (ghinstallation's token refresh included) wrapped in
// *url.Error.
func classify(err error, attemptTimedOut bool) verdict {
	var (
		rl    *github.RateLimitError
		abuse *github.AbuseRateLimitError
		er    *github.ErrorResponse
		he    *ghinstallation.HTTPError
	)
	switch {
	case errors.Is(err, ErrOtherHost):
		return verdict{kind: permanent} // not sent, and would not be the next time
	case errors.Is(err, fleet.ErrNotLeader):
		return verdict{kind: permanent} // refused before it was sent: no longer the leader
	case errors.As(err, &rl):
		at := rl.Rate.Reset.Time
		if at.IsZero() {
			at = time.Now().Add(time.Minute)
		}
		return verdict{kind: rateLimited, status: statusOfResponse(rl.Response), retryAt: at}
	case errors.As(err, &abuse):
		at := time.Now().Add(time.Minute) // GitHub: wait at least a minute
		if abuse.RetryAfter != nil {
			at = time.Now().Add(*abuse.RetryAfter)
		}
		return verdict{kind: rateLimited, status: statusOfResponse(abuse.Response), retryAt: at}
	case errors.As(err, &er) && er.Response != nil:
		return classifyResponse(er.Response, er.Message, true)
	case errors.As(err, &he):
		// The token refresh failed, so the API request never left.
		if he.Response == nil {
			return verdict{kind: transient}
		}
		// ghinstallation leaves the body open on non-2xx answers.
		_, _ = io.Copy(io.Discard, io.LimitReader(he.Response.Body, 64<<10))
		_ = he.Response.Body.Close()
		v := classifyResponse(he.Response, "", false)
		if v.kind == unauthorized {
			v.kind = permanent // the App JWT itself was refused: wrong key or app id
		}
		return v
	case attemptTimedOut || errors.Is(err, context.DeadlineExceeded):
		return verdict{kind: transient, sent: true}
	}
	var ne net.Error
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return verdict{kind: transient} // never connected
	}
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return verdict{kind: transient, sent: true}
	}
	return verdict{kind: permanent, sent: true}
}

func classifyResponse(resp *http.Response, msg string, sent bool) verdict {
	v := verdict{kind: permanent, sent: sent, status: resp.StatusCode}
	if at, ok := rateLimitRetryAt(resp, msg); ok {
		v.kind, v.retryAt = rateLimited, at
		return v
	}
	switch {
	case resp.StatusCode >= 500:
		v.kind = transient
	case resp.StatusCode == http.StatusUnauthorized:
		v.kind = unauthorized
	}
	return v
}

// rateLimitRetryAt reads GitHub's rate-limit signals from a 403 or 429.
func rateLimitRetryAt(resp *http.Response, msg string) (time.Time, bool) {
	if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusTooManyRequests {
		return time.Time{}, false
	}
	h := resp.Header
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if secs, err := strconv.ParseInt(v, 10, 64); err == nil && secs >= 0 {
			return time.Now().Add(time.Duration(min(secs, 86400)) * time.Second), true
		}
		if t, err := http.ParseTime(v); err == nil {
			return t, true
		}
	}
	if h.Get("X-RateLimit-Remaining") == "0" {
		if reset, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64); err == nil {
			return time.Unix(reset, 0), true
		}
		return time.Now().Add(time.Minute), true
	}
	if resp.StatusCode == http.StatusTooManyRequests || strings.Contains(strings.ToLower(msg), "rate limit") {
		return time.Now().Add(time.Minute), true // GitHub: wait at least a minute
	}
	return time.Time{}, false
}

func statusOfResponse(r *http.Response) int {
	if r == nil {
		return 0
	}
	return r.StatusCode
}

// statusOf returns the HTTP status of a GitHub error answer, or 0.
func statusOf(err error) int {
	var er *github.ErrorResponse
	if errors.As(err, &er) {
		return statusOfResponse(er.Response)
	}
	return 0
}
