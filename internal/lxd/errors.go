package lxd

import (
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

// classify marks err as fleet.ErrUnreachable when LXD did not answer: a
// failed dial, a connection cut during the call, or the event stream closing
// under an operation. The client reports the last only as text, so the
// message is checked too.
func classify(err error) error {
	if err == nil || errors.Is(err, fleet.ErrUnreachable) {
		return err
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return unreachableError{err}
	}
	msg := err.Error()
	for _, s := range []string{"websocket: close", "connection refused", "connection reset by peer", "broken pipe", "unexpected EOF"} {
		if strings.Contains(msg, s) {
			return unreachableError{err}
		}
	}
	return err
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
