// Package webhook receives GitHub App webhooks: it verifies the signature
// before anything reads the body, records workflow_job deliveries durably
// and answers at once; the scheduler does the slow work.
package webhook

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/google/go-github/v62/github"
	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// MaxBody caps a delivery. GitHub sends at most 25 MB; a workflow_job is a
// few KB.
const MaxBody = 1 << 20

// Recorder stores a delivery durably; fresh is false for a delivery id
// recorded before.
type Recorder interface {
	Record(ctx context.Context, d fleet.Delivery) (fresh bool, err error)
}

// Metrics counts deliveries by event and result; internal/metrics
// satisfies it.
type Metrics interface {
	WebhookReceived(event, result string)
}

// Handler serves POST /webhook.
type Handler struct {
	m      Metrics
	secret []byte
	rec    Recorder
	notify func()
	clock  fleet.Clock
	log    zerolog.Logger
}

// Options are the handler's optional parts.
type Options struct {
	// Notify is called after a fresh delivery is recorded; it must not block.
	Notify  func()
	Metrics Metrics     // nil: none
	Clock   fleet.Clock // stamps each delivery's arrival; nil: the wall clock
	Log     zerolog.Logger
}

func (h *Handler) count(r *http.Request, result string) {
	if h.m != nil {
		h.m.WebhookReceived(r.Header.Get("X-GitHub-Event"), result)
	}
}

// New returns a handler that records into rec.
func New(secret []byte, rec Recorder, o Options) (*Handler, error) {
	if len(secret) == 0 {
		return nil, errors.New("webhook: secret is empty")
	}
	if o.Notify == nil {
		o.Notify = func() {}
	}
	if o.Clock == nil {
		o.Clock = fleet.WallClock
	}
	return &Handler{
		secret: secret, rec: rec, notify: o.Notify, m: o.Metrics, clock: o.Clock,
		log: o.Log.With().Str("component", "webhook").Logger(),
	}, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	deliveryID := r.Header.Get("X-GitHub-Delivery")
	log := h.log.With().Str("delivery_id", deliveryID).Logger()

	// Only SHA-256: go-github would fall back to the SHA-1 header.
	sig := r.Header.Get("X-Hub-Signature-256")
	if !strings.HasPrefix(sig, "sha256=") {
		log.Warn().Msg("rejected: missing or malformed X-Hub-Signature-256")
		h.count(r, "bad_signature")
		http.Error(w, "missing X-Hub-Signature-256", http.StatusUnauthorized)
		return
	}
	body, err := readBody(w, r)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			log.Warn().Int64("limit", tooBig.Limit).Msg("rejected: body too large")
			h.count(r, "too_large")
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		log.Warn().Err(err).Msg("rejected: reading body")
		h.count(r, "bad_request")
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	// ValidateSignature compares in constant time.
	if err := github.ValidateSignature(sig, body, h.secret); err != nil {
		log.Warn().Msg("rejected: bad signature")
		h.count(r, "bad_signature")
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}

	event := r.Header.Get("X-GitHub-Event")
	if event == "" || deliveryID == "" {
		log.Warn().Msg("rejected: missing X-GitHub-Event or X-GitHub-Delivery")
		h.count(r, "bad_request")
		http.Error(w, "missing X-GitHub-Event or X-GitHub-Delivery", http.StatusBadRequest)
		return
	}
	if event != "workflow_job" {
		log.Debug().Str("event", event).Msg("ignored event")
		h.count(r, "ignored")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	d, err := parse(body)
	if err != nil {
		log.Warn().Err(err).Msg("rejected: malformed workflow_job")
		h.count(r, "bad_request")
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	log = log.With().Int64("job_id", d.JobID).Str("action", string(d.Action)).Logger()
	switch d.Action {
	case fleet.ActionQueued, fleet.ActionInProgress, fleet.ActionCompleted:
	default: // "waiting" and whatever GitHub adds later
		log.Debug().Msg("ignored action")
		h.count(r, "ignored")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if d.Org == "" {
		// The App is installed on a user account: org-level JIT runners
		// cannot serve it. Answer 2xx, since a redelivery would not help.
		log.Warn().Msg("ignored: workflow_job without an organization")
		h.count(r, "ignored")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	d.DeliveryID = deliveryID
	d.ReceivedAt = h.clock.Now()
	fresh, err := h.rec.Record(r.Context(), d)
	if err != nil {
		// 5xx: GitHub lists the delivery as failed, so it can be redelivered.
		log.Error().Err(err).Msg("record delivery failed")
		h.count(r, "error")
		http.Error(w, "cannot record delivery", http.StatusServiceUnavailable)
		return
	}
	if fresh {
		h.count(r, "accepted")
		h.notify()
	} else {
		h.count(r, "duplicate")
		log.Info().Msg("duplicate delivery")
	}
	w.WriteHeader(http.StatusAccepted)
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > MaxBody {
		return nil, &http.MaxBytesError{Limit: MaxBody}
	}
	return io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
}
