package lxd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/canonical/lxd/shared/api"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// notFoundError keeps LXD's message but also matches fleet.ErrNotFound.
type notFoundError struct{ err error }

func (e notFoundError) Error() string   { return e.err.Error() }
func (e notFoundError) Unwrap() []error { return []error{e.err, fleet.ErrNotFound} }

func notFound(err error) error {
	if api.StatusErrorCheck(err, http.StatusNotFound) {
		return notFoundError{err}
	}
	return err
}

// unreachableError keeps LXD's message but also matches
// fleet.ErrUnreachable.
type unreachableError struct{ err error }

func (e unreachableError) Error() string   { return e.err.Error() }
func (e unreachableError) Unwrap() []error { return []error{e.err, fleet.ErrUnreachable} }

// memberDownError keeps LXD's message but also matches
// fleet.ErrMemberUnreachable.
type memberDownError struct{ err error }

func (e memberDownError) Error() string   { return e.err.Error() }
func (e memberDownError) Unwrap() []error { return []error{e.err, fleet.ErrMemberUnreachable} }

// What LXD says when the member a call needs does not answer it: seen
// with 5.0 as "Unable to connect to: ADDR ([dial tcp ADDR: connect:
// connection refused])" and "Missing event connection with target
// cluster member".
var memberDownText = []string{"Unable to connect to", "connection refused", "Missing event connection with target cluster member",
	"no route to host", "i/o timeout", "connection reset by peer"}

// What the client says when its own connection failed, in errors that
// carry no type: a failed dial is reported as text ("Unable to connect
// to: ..."), and the end of the event stream under an operation too.
var downText = []string{"websocket: close", "connection refused", "connection reset by peer", "broken pipe", "unexpected EOF",
	"Unable to connect to", "no route to host", "i/o timeout"}

// classify marks err as fleet.ErrUnreachable when LXD did not answer: a
// failed dial, a connection cut during the call, or the event stream closing
// under an operation. An answer from LXD (a status error) is never that;
// one that says the cluster member the call needed did not answer
// matches fleet.ErrMemberUnreachable instead.
func classify(err error) error {
	if err == nil || errors.Is(err, fleet.ErrUnreachable) || errors.Is(err, fleet.ErrMemberUnreachable) {
		return err
	}
	if answered(err) {
		if containsAny(err.Error(), memberDownText) {
			return memberDownError{err}
		}
		return err
	}
	if unanswered(err) {
		return unreachableError{err}
	}
	return err
}

// answered reports whether err is LXD's own answer.
func answered(err error) bool {
	var se api.StatusError
	var sp *api.StatusError
	return errors.As(err, &se) || errors.As(err, &sp)
}

func unanswered(err error) bool {
	var opErr *net.OpError
	if errors.As(err, &opErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	return containsAny(err.Error(), downText)
}

// endpointDown reports whether err says that the address a call went to
// did not answer: the client should move to another. A certificate the
// client refuses is not that: every member shares one.
func endpointDown(err error) bool {
	if err == nil || answered(err) {
		return false
	}
	var ce *tls.CertificateVerificationError
	var ue x509.UnknownAuthorityError
	var he x509.HostnameError
	if errors.As(err, &ce) || errors.As(err, &ue) || errors.As(err, &he) {
		return false
	}
	return unanswered(err)
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// redactedError hides a secret that LXD echoed back (e.g. in a message about
// a bad config value) while keeping the chain for errors.Is.
type redactedError struct {
	msg string
	err error
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.err }

func redact(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return redactedError{msg: strings.ReplaceAll(err.Error(), secret, fleet.Redacted), err: err}
}
