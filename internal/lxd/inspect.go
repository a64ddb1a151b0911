package lxd

import (
	"context"
	"fmt"
	"maps"
)

// This file holds the read-only calls that `doctor` uses to tell an
// operator what a pool needs and LXD lacks.

// Profile is a profile's config and devices.
type Profile struct {
	Name    string
	Config  map[string]string
	Devices map[string]map[string]string
}

// Profile returns the named profile of the project; an error matching
// fleet.ErrNotFound when there is none.
func (c *Client) Profile(ctx context.Context, name string) (Profile, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	p, _, err := c.server(ctx, "").GetProfile(name)
	if err != nil {
		return Profile{}, classify(fmt.Errorf("profile %s: %w", name, notFound(err)))
	}
	return Profile{Name: p.Name, Config: maps.Clone(p.Config), Devices: maps.Clone(p.Devices)}, nil
}

// StoragePool checks that the named storage pool exists; an error
// matching fleet.ErrNotFound when it does not.
func (c *Client) StoragePool(ctx context.Context, name string) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	if _, _, err := c.server(ctx, "").GetStoragePool(name); err != nil {
		return classify(fmt.Errorf("storage pool %s: %w", name, notFound(err)))
	}
	return nil
}
