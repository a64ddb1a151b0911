package lxd

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/canonical/lxd/shared/api"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// What LXD says and what the client says are told apart: an answer from
// LXD is never "unreachable", even when it says that the member a call
// needed did not answer; only a failure of the address in use moves the
// client to the next.
func TestErrorClassification(t *testing.T) {
	refused := "Unable to connect to: 10.0.0.1:8443 ([dial tcp 10.0.0.1:8443: connect: connection refused])"
	tests := []struct {
		name                    string
		err                     error
		unreachable, memberDown bool
		endpointDown            bool
	}{
		{"the address in use refuses", &url.Error{Op: "Get", URL: "https://10.0.0.1:8443/1.0", Err: errors.New(refused)}, true, false, true},
		{"the event stream ends", errors.New("websocket: close 1006 (abnormal closure): unexpected EOF"), true, false, true},
		{"a member forwards to a dead one", api.StatusErrorf(http.StatusInternalServerError, "Post \"https://10.0.0.1:8443/1.0/instances\": %s", refused), false, true, false},
		{"a member has no event connection to a dead one", api.StatusErrorf(http.StatusInternalServerError, "Missing event connection with target cluster member"), false, true, false},
		{"not found", api.StatusErrorf(http.StatusNotFound, "Instance not found"), false, false, false},
		{"a refusal", api.StatusErrorf(http.StatusBadRequest, "Invalid devices"), false, false, false},
		{"a certificate the client refuses", &url.Error{Op: "Get", URL: "https://h", Err: x509.UnknownAuthorityError{}}, false, false, false},
		{"wrapped", fmt.Errorf("create instance x: %w", api.StatusErrorf(http.StatusInternalServerError, "Missing event connection with target cluster member")), false, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classify(tt.err)
			if errors.Is(got, fleet.ErrUnreachable) != tt.unreachable || errors.Is(got, fleet.ErrMemberUnreachable) != tt.memberDown {
				t.Errorf("classify: unreachable %v, member unreachable %v; want %v, %v", errors.Is(got, fleet.ErrUnreachable),
					errors.Is(got, fleet.ErrMemberUnreachable), tt.unreachable, tt.memberDown)
			}
			if got.Error() != tt.err.Error() {
				t.Errorf("classify changed the message: %q", got)
			}
			if endpointDown(tt.err) != tt.endpointDown {
				t.Errorf("endpointDown = %v, want %v", !tt.endpointDown, tt.endpointDown)
			}
		})
	}
}
