package image

import (
	"context"
	"errors"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
)

// Prune deletes the images built for name beyond the keep newest, oldest
// first, never the one the alias name points to.
func Prune(ctx context.Context, c ImageStore, name string, keep int) ([]string, error) {
	current, err := c.AliasTarget(ctx, name)
	if err != nil {
		return nil, err
	}
	imgs, err := c.Images(ctx)
	if err != nil {
		return nil, err
	}
	var ours []lxd.ImageInfo
	for _, img := range imgs {
		if img.Properties[PropName] == name {
			ours = append(ours, img)
		}
	}
	// Oldest first by build time (then LXD's creation time).
	sortByBuild(ours)
	var pruned []string
	var errs []error
	excess := len(ours) - keep
	for _, img := range ours {
		if excess <= 0 {
			break
		}
		if img.Fingerprint == current {
			continue
		}
		// A failed delete counts too: the image stays and is tried again
		// next time, and a newer one is not deleted in its place.
		excess--
		if err := c.DeleteImage(ctx, img.Fingerprint); err != nil {
			errs = append(errs, err)
			continue
		}
		pruned = append(pruned, img.Fingerprint)
	}
	return pruned, errors.Join(errs...)
}

func sortByBuild(imgs []lxd.ImageInfo) {
	key := func(i lxd.ImageInfo) time.Time {
		if t, err := time.Parse(time.RFC3339, i.Properties[PropBuildTime]); err == nil {
			return t
		}
		return i.CreatedAt
	}
	for i := 1; i < len(imgs); i++ { // insertion sort: stable, tiny lists
		for j := i; j > 0 && key(imgs[j]).Before(key(imgs[j-1])); j-- {
			imgs[j], imgs[j-1] = imgs[j-1], imgs[j]
		}
	}
}
