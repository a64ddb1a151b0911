package lxd

import (
	"context"
	"fmt"
	"net/http"

	"github.com/canonical/lxd/shared/api"
)

// EnsureProfile creates profile name with exactly these devices, or
// replaces the devices of the existing profile (its config is kept).
func (c *Client) EnsureProfile(ctx context.Context, name string, devices map[string]map[string]string) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	s := c.server(ctx, "")
	p, etag, err := s.GetProfile(name)
	switch {
	case api.StatusErrorCheck(err, http.StatusNotFound):
		err = s.CreateProfile(api.ProfilesPost{Name: name, ProfilePut: api.ProfilePut{Devices: devices}})
	case err == nil:
		put := p.Writable()
		put.Devices = devices
		err = s.UpdateProfile(name, put, etag)
	}
	if err != nil {
		return fmt.Errorf("ensure profile %s: %w", name, err)
	}
	return nil
}

// DeleteProfile deletes profile name; a missing one is success.
func (c *Client) DeleteProfile(ctx context.Context, name string) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	err := c.server(ctx, "").DeleteProfile(name)
	if err != nil && !api.StatusErrorCheck(err, http.StatusNotFound) {
		return fmt.Errorf("delete profile %s: %w", name, err)
	}
	return nil
}
