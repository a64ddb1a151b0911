// Package webhook receives GitHub App webhooks: it bounds what unknown
// senders can make it read and hold, verifies the signature before
// anything parses the body, records workflow_job deliveries durably and
// answers at once; the scheduler does the slow work.
package webhook

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-github/v62/github"
	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// MaxBody caps a delivery. GitHub sends at most 25 MB, but a workflow_job
// is a few KB (7.5 KB for a job with a long branch name and many labels),
// and the service takes nothing else: 256 KiB leaves room and keeps what an
// unauthenticated sender can make the service hold small.
const MaxBody = 256 << 10

// Defaults of Options.
const (
	// DefaultMaxReads bounds the bodies read at once, before their
	// signature is known: at most 64 x 256 KiB = 16 MiB.
	DefaultMaxReads = 64
	// DefaultReadWait is how long a request waits for its turn to be read
	// before it gets 503.
	DefaultReadWait = 2 * time.Second
	// DefaultBodyTimeout bounds reading one body. GitHub sends it at once.
	DefaultBodyTimeout = 5 * time.Second
	// DefaultHeardEvery is how often a workflow_job delivery is recorded
	// as the last webhook heard, at most.
	DefaultHeardEvery = 10 * time.Second
)

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
	m           Metrics
	secret      []byte
	rec         Recorder
	notify      func()
	clock       fleet.Clock
	log         zerolog.Logger
	bodies      *bodies
	readWait    time.Duration
	bodyTimeout time.Duration
	rejections  *logLimit
	maxAge      time.Duration
	heard       func(ctx context.Context, event string, at time.Time) error
	heardEvery  time.Duration
	install     func(ctx context.Context, in fleet.Installation) error
	heardAt     atomic.Int64 // unix nanoseconds of the last workflow_job recorded as heard
}

// Options are the handler's optional parts.
type Options struct {
	// Notify is called after a fresh delivery is recorded; it must not block.
	Notify  func()
	Metrics Metrics     // nil: none
	Clock   fleet.Clock // stamps each delivery's arrival; nil: the wall clock
	Log     zerolog.Logger

	// MaxReads bounds the bodies being read and verified at once, whose
	// memory anyone can make the service spend; default DefaultMaxReads.
	// A request waits up to ReadWait (default DefaultReadWait) for its
	// turn, then gets 503 with Retry-After.
	MaxReads int
	ReadWait time.Duration
	// BodyTimeout bounds reading one body once its turn came; default
	// DefaultBodyTimeout.
	BodyTimeout time.Duration

	// Heard records that a webhook with a valid signature arrived, of any
	// event (ping included), so that an operator sees the first one before
	// any job: a wrong proxy or secret shows at once. It is called for
	// every event but workflow_job, and for workflow_job at most once per
	// HeardEvery (default DefaultHeardEvery), so that the busy path pays
	// one write per interval and not per delivery. Its error is logged,
	// and the delivery handled as usual. nil: nothing is recorded.
	Heard      func(ctx context.Context, event string, at time.Time) error
	HeardEvery time.Duration

	// Installation records an installation webhook's news (created,
	// deleted, suspend, unsuspend) durably, before the answer: warm pools
	// follow the App's installations. Any replica records it; the leader
	// reads it. nil: installation events are ignored like other events.
	Installation func(ctx context.Context, in fleet.Installation) error

	// MaxAge refuses workflow_job deliveries whose event (by the job's
	// own timestamps) is older: they are answered 200, so that nothing
	// retries them, and recorded nowhere but in the metric (result
	// "stale"). It must not exceed how long the state remembers a job
	// (the scheduler's Retention): a replayed queued delivery of a job
	// the state has forgotten would queue it again. Zero: no limit, and
	// no timestamps needed.
	MaxAge time.Duration
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
	if o.MaxReads <= 0 {
		o.MaxReads = DefaultMaxReads
	}
	if o.ReadWait <= 0 {
		o.ReadWait = DefaultReadWait
	}
	if o.BodyTimeout <= 0 {
		o.BodyTimeout = DefaultBodyTimeout
	}
	if o.HeardEvery <= 0 {
		o.HeardEvery = DefaultHeardEvery
	}
	log := o.Log.With().Str("component", "webhook").Logger()
	return &Handler{
		secret: secret, rec: rec, notify: o.Notify, m: o.Metrics, clock: o.Clock, log: log,
		bodies: newBodies(o.MaxReads), readWait: o.ReadWait, bodyTimeout: o.BodyTimeout,
		rejections: newLogLimit(o.Clock, log), maxAge: o.MaxAge, heard: o.Heard, heardEvery: o.HeardEvery,
		install: o.Installation,
	}, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Unauthenticated until the signature is checked, and then still not
	// covered by it: logged only when it has GitHub's shape.
	deliveryID := r.Header.Get("X-GitHub-Delivery")
	if !validDeliveryID(deliveryID) {
		deliveryID = ""
	}

	// Only SHA-256: go-github would fall back to the SHA-1 header.
	sig := r.Header.Get("X-Hub-Signature-256")
	if !strings.HasPrefix(sig, "sha256=") {
		dropBody(w)
		h.refuse(w, r, deliveryID, http.StatusUnauthorized, "bad_signature", "missing or malformed X-Hub-Signature-256", nil)
		return
	}
	// GitHub always sends a Content-Length, and so do both proxy examples.
	// Without one, only reading a body would tell its size.
	if r.ContentLength < 0 {
		dropBody(w)
		h.refuse(w, r, deliveryID, http.StatusLengthRequired, "bad_request", "Content-Length required", nil)
		return
	}
	if r.ContentLength > MaxBody {
		dropBody(w)
		h.refuse(w, r, deliveryID, http.StatusRequestEntityTooLarge, "too_large", "body too large", nil)
		return
	}
	// A buffer bounds the memory this request may take, until its body is
	// parsed.
	buf, ok := h.bodies.get(r.Context(), h.readWait)
	if !ok {
		dropBody(w)
		w.Header().Set("Retry-After", "1")
		h.refuse(w, r, deliveryID, http.StatusServiceUnavailable, "busy", "too many bodies being read, retry later", nil)
		return
	}
	release := func() {
		if buf != nil {
			h.bodies.put(buf)
			buf = nil
		}
	}
	defer release()
	body, err := readBody(w, r, buf, h.bodyTimeout)
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			dropBody(w)
			h.refuse(w, r, deliveryID, http.StatusRequestEntityTooLarge, "too_large", "body too large", nil)
			return
		}
		h.refuse(w, r, deliveryID, http.StatusBadRequest, "bad_request", "cannot read body", err)
		return
	}
	// ValidateSignature compares in constant time.
	if err := github.ValidateSignature(sig, body, h.secret); err != nil {
		h.refuse(w, r, deliveryID, http.StatusUnauthorized, "bad_signature", "bad signature", nil)
		return
	}

	event := r.Header.Get("X-GitHub-Event")
	if event == "" || deliveryID == "" {
		h.refuse(w, r, deliveryID, http.StatusBadRequest, "bad_request", "missing X-GitHub-Event, or X-GitHub-Delivery missing or not an id", nil)
		return
	}
	log := h.log.With().Str("delivery_id", deliveryID).Logger()
	h.recordHeard(r.Context(), event, log)
	if event == "installation" && h.install != nil {
		h.installation(w, r, body, deliveryID, log)
		return
	}
	if event != "workflow_job" {
		log.Debug().Str("event", event).Msg("ignored event")
		h.count(r, "ignored")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	d, at, err := parse(body)
	release() // the body is not needed past here
	if err != nil {
		h.refuse(w, r, deliveryID, http.StatusBadRequest, "bad_request", "malformed workflow_job", err)
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
	if h.maxAge > 0 {
		if at.IsZero() {
			h.refuse(w, r, deliveryID, http.StatusBadRequest, "bad_request", "workflow_job without created_at", nil)
			return
		}
		// X-GitHub-Delivery is not signed: a recorded body replayed with
		// fresh ids is accepted each time. While the state remembers the
		// job, that changes nothing; past that, the job's own time tells.
		if age := h.clock.Now().Sub(at); age > h.maxAge {
			h.count(r, "stale")
			if h.rejections.allow() {
				log.Warn().Time("event_at", at).Dur("max_age", h.maxAge).
					Msg("refused: stale delivery, older than the state remembers (a replay, or redelivered too late); not recorded")
			}
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "stale delivery: not recorded\n")
			return
		}
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

// installation records an installation event: what it says of the
// installation, as of its arrival (a later word wins). Accounts that are
// not organizations, and other actions (new_permissions_accepted), are
// answered 204 and recorded nowhere.
func (h *Handler) installation(w http.ResponseWriter, r *http.Request, body []byte, deliveryID string, log zerolog.Logger) {
	in, ok, err := parseInstallation(body)
	if err != nil {
		h.refuse(w, r, deliveryID, http.StatusBadRequest, "bad_request", "malformed installation event", err)
		return
	}
	if !ok {
		h.count(r, "ignored")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	in.At = h.clock.Now()
	log = log.With().Int64("installation_id", in.ID).Str("org", in.Login).Str("state", string(in.State)).Logger()
	if err := h.install(r.Context(), in); err != nil {
		log.Error().Err(err).Msg("record installation failed")
		h.count(r, "error")
		http.Error(w, "cannot record installation", http.StatusServiceUnavailable)
		return
	}
	log.Info().Msg("installation recorded")
	h.count(r, "accepted")
	h.notify()
	w.WriteHeader(http.StatusAccepted)
}

// recordHeard records a signed webhook as the last heard: every event but
// workflow_job, and workflow_job once per heardEvery.
func (h *Handler) recordHeard(ctx context.Context, event string, log zerolog.Logger) {
	if h.heard == nil {
		return
	}
	now := h.clock.Now()
	if event == "workflow_job" {
		last := h.heardAt.Load()
		if now.UnixNano()-last < int64(h.heardEvery) || !h.heardAt.CompareAndSwap(last, now.UnixNano()) {
			return // recorded recently, or another request is recording it now
		}
	}
	if err := h.heard(ctx, event, now); err != nil {
		if event == "workflow_job" {
			h.heardAt.Store(0) // try again with the next one
		}
		if h.rejections.allow() {
			log.Warn().Err(err).Str("event", event).Msg("cannot record the webhook as the last heard")
		}
	}
}

// refuse answers a request that changes nothing and counts it by result.
// Its log line obeys the rejection log's rate limit: the metric counts
// every one, and anyone can send them.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, deliveryID string, status int, result, why string, err error) {
	h.count(r, result)
	if h.rejections.allow() {
		ev := h.log.Warn().Int("status", status).Str("result", result)
		if deliveryID != "" {
			ev = ev.Str("delivery_id", deliveryID)
		}
		ev.Err(err).Msg("rejected: " + why)
	}
	if err != nil {
		why += ": " + err.Error()
	}
	http.Error(w, why, status)
}

// validDeliveryID reports whether s can be a delivery id: GitHub's are
// UUIDs; at most 64 letters, digits and hyphens are taken.
func validDeliveryID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
