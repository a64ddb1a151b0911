package lxd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"time"

	lxdclient "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared/api"
)

// This file holds the image calls of image builds: publish, import, alias
// and delete. Publish is bounded only by the caller's context, since a big
// image may take far longer than OpTimeout to publish.

// Publish makes a stopped instance into an image with these properties and
// aliases. compression is LXD's algorithm ("" for the server default,
// "none" to skip it). It returns the new image's fingerprint.
func (c *Client) Publish(ctx context.Context, name string, properties map[string]string, aliases []string, compression string) (string, error) {
	s := c.server(ctx, "")
	req := api.ImagesPost{
		ImagePut:             api.ImagePut{Properties: properties},
		Source:               &api.ImagesPostSource{Type: "instance", Name: name},
		CompressionAlgorithm: compression,
	}
	for _, a := range aliases {
		req.Aliases = append(req.Aliases, api.ImageAlias{Name: a})
	}
	op, err := s.CreateImage(req, nil)
	var id string
	if err == nil {
		id = op.Get().ID
		err = c.wait(ctx, op)
	}
	if err != nil {
		return "", fmt.Errorf("publish %s: %w", name, err)
	}
	fp, _ := opMetadata(s, op, id)["fingerprint"].(string)
	if fp == "" {
		return "", fmt.Errorf("publish %s: no fingerprint in operation", name)
	}
	return fp, nil
}

// ImageInfo is what image builds need to know about an image.
type ImageInfo struct {
	Fingerprint  string
	Architecture string // LXD's name: x86_64, aarch64, ...
	Type         string // container or virtual-machine
	Properties   map[string]string
	Aliases      []string
	CreatedAt    time.Time
}

func toImageInfo(img api.Image) ImageInfo {
	info := ImageInfo{Fingerprint: img.Fingerprint, Architecture: img.Architecture, Type: img.Type,
		Properties: img.Properties, CreatedAt: img.CreatedAt}
	for _, a := range img.Aliases {
		info.Aliases = append(info.Aliases, a.Name)
	}
	sort.Strings(info.Aliases)
	return info
}

// Image returns the image that alias or (partial) fingerprint names; an
// error matching fleet.ErrNotFound when there is none.
func (c *Client) Image(ctx context.Context, name string) (ImageInfo, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	s := c.server(ctx, "")
	fp, err := resolveImage(s, name)
	if err != nil {
		return ImageInfo{}, err
	}
	img, _, err := s.GetImage(fp)
	if err != nil {
		return ImageInfo{}, fmt.Errorf("image %s: %w", name, notFound(err))
	}
	return toImageInfo(*img), nil
}

// Images lists the project's images, oldest first.
func (c *Client) Images(ctx context.Context) ([]ImageInfo, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	imgs, err := c.server(ctx, "").GetImages()
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	out := make([]ImageInfo, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, toImageInfo(img))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// AliasTarget returns the fingerprint alias points to, or "" when there is
// no such alias.
func (c *Client) AliasTarget(ctx context.Context, alias string) (string, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	a, _, err := c.server(ctx, "").GetImageAlias(alias)
	if api.StatusErrorCheck(err, http.StatusNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("image alias %s: %w", alias, err)
	}
	return a.Target, nil
}

// SetAlias points alias at fingerprint, creating it or moving it in one
// call (instances launched meanwhile get either the old or the new image).
func (c *Client) SetAlias(ctx context.Context, alias, fingerprint string) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	return setAlias(c.server(ctx, ""), alias, fingerprint)
}

func setAlias(s lxdclient.InstanceServer, alias, fingerprint string) error {
	err := s.UpdateImageAlias(alias, api.ImageAliasesEntryPut{Target: fingerprint}, "")
	if api.StatusErrorCheck(err, http.StatusNotFound) {
		err = s.CreateImageAlias(api.ImageAliasesPost{ImageAliasesEntry: api.ImageAliasesEntry{Name: alias, Target: fingerprint}})
	}
	if err != nil {
		return fmt.Errorf("image alias %s -> %s: %w", alias, fingerprint, err)
	}
	return nil
}

// ImportImage uploads a unified image tarball (plain or compressed) and
// points alias at it, replacing the alias's old target. Importing an image
// that already exists is success. When only the alias fails, the
// fingerprint is returned with the error so that the caller can delete the
// image. An empty alias adds none.
func (c *Client) ImportImage(ctx context.Context, tarball io.Reader, alias string) (string, error) {
	if tarball == nil {
		return "", errors.New("import image: nil tarball")
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	s := c.server(ctx, "")

	// LXD names an image by the sha256 of the uploaded tarball; hashing
	// while uploading finds the existing image when the upload is refused
	// as a duplicate (an error with no status code to test).
	h := sha256.New()
	body := io.TeeReader(ctxReader{ctx: ctx, r: tarball}, h)
	op, err := s.CreateImage(api.ImagesPost{}, &lxdclient.ImageCreateArgs{MetaFile: body})
	if err == nil {
		err = c.wait(ctx, op)
	}
	var fp string
	if err == nil {
		fp, _ = op.Get().Metadata["fingerprint"].(string)
	}
	if err != nil || fp == "" {
		_, _ = io.Copy(h, ctxReader{ctx: ctx, r: tarball}) // hash what LXD did not read
		sum := hex.EncodeToString(h.Sum(nil))
		if _, _, gerr := s.GetImage(sum); gerr != nil {
			if err == nil {
				err = errors.New("no fingerprint in operation")
			}
			return "", fmt.Errorf("import image: %w", err)
		}
		fp = sum
	}
	if alias == "" {
		return fp, nil
	}
	return fp, setAlias(s, alias, fp)
}

// DeleteImage deletes the image with this fingerprint, and so its aliases.
// A missing image is success.
func (c *Client) DeleteImage(ctx context.Context, fingerprint string) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	s := c.server(ctx, "")
	op, err := s.DeleteImage(fingerprint)
	if api.StatusErrorCheck(err, http.StatusNotFound) {
		return nil
	}
	if err == nil {
		err = c.wait(ctx, op)
	}
	if err != nil {
		if _, _, gerr := s.GetImage(fingerprint); api.StatusErrorCheck(gerr, http.StatusNotFound) {
			return nil
		}
		return fmt.Errorf("delete image %s: %w", fingerprint, err)
	}
	return nil
}

// ctxReader stops an upload when ctx ends: the client's image upload does
// not take a context.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
