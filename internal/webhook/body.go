package webhook

import (
	"context"
	"io"
	"net/http"
	"sync"
	"time"
)

// bodies bounds the memory that request bodies can take before their
// signature is known: at most n buffers of MaxBody+1 bytes, each lent to
// one request while it reads, verifies and parses its body. A request
// that finds none free waits its turn (first come, first served) for a
// while, then gives up. Buffers are made when first needed and then kept,
// the most recently used lent first, so a quiet service holds one or two
// and a flood of bogus bodies makes no garbage.
type bodies struct {
	turns chan struct{} // a token for each buffer that may be lent

	mu   sync.Mutex
	free [][]byte
}

func newBodies(n int) *bodies {
	b := &bodies{turns: make(chan struct{}, n)}
	for range n {
		b.turns <- struct{}{}
	}
	return b
}

// get returns a buffer, or false when none came free within wait or ctx
// ended first.
func (b *bodies) get(ctx context.Context, wait time.Duration) ([]byte, bool) {
	select {
	case <-b.turns:
	default:
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-b.turns:
		case <-t.C:
			return nil, false
		case <-ctx.Done():
			return nil, false
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if n := len(b.free); n > 0 {
		buf := b.free[n-1]
		b.free = b.free[:n-1]
		return buf, true
	}
	return make([]byte, MaxBody+1), true
}

func (b *bodies) put(buf []byte) {
	b.mu.Lock()
	b.free = append(b.free, buf[:cap(buf)])
	b.mu.Unlock()
	b.turns <- struct{}{}
}

// readBody reads r's body into buf, within timeout. It fails with an
// *http.MaxBytesError beyond MaxBody.
func readBody(w http.ResponseWriter, r *http.Request, buf []byte, timeout time.Duration) ([]byte, error) {
	// The server's ReadTimeout counts from the request's first byte and
	// may be long; this bounds how long a slow sender holds the buffer.
	// httptest's recorder cannot set deadlines: the error is ignored.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(timeout))
	n, err := io.ReadFull(http.MaxBytesReader(w, r.Body, MaxBody), buf[:MaxBody+1])
	switch err {
	case io.EOF, io.ErrUnexpectedEOF: // the whole body, shorter than buf
		// No deadline once the body is in: one that passed while the
		// handler runs would cancel the request's context. On a failed
		// read it stays, and bounds what the server reads of the rest.
		_ = rc.SetReadDeadline(time.Time{})
		return buf[:n], nil
	case nil: // cannot happen: MaxBytesReader fails first
		return nil, &http.MaxBytesError{Limit: MaxBody}
	}
	return nil, err
}

// dropBody, for a request answered without reading its body, has the
// connection closed after the answer. Otherwise the server would read up
// to 256 KiB of what is left, for as long as its ReadTimeout allows, to
// reuse the connection.
func dropBody(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}
