package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
)

// fetchRunner copies the runner tarball into a host temp file and checks
// its sha256. The caller removes the file.
func fetchRunner(ctx context.Context, hc *http.Client, r RunnerSpec, logf func(string, ...any)) (string, error) {
	src := r.runnerURL()
	f, err := os.CreateTemp("", "actions-runner-*.tar.gz")
	if err != nil {
		return "", fmt.Errorf("runner: %w", err)
	}
	ok := false
	defer func() {
		f.Close()
		if !ok {
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	w := io.MultiWriter(f, h)
	logf("fetching runner %s from %s", r.Version, src)
	if path.IsAbs(src) {
		in, err := os.Open(src)
		if err != nil {
			return "", fmt.Errorf("runner: %w", err)
		}
		_, err = io.Copy(w, in)
		in.Close()
		if err != nil {
			return "", fmt.Errorf("runner: read %s: %w", src, err)
		}
	} else {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return "", fmt.Errorf("runner: %w", err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return "", fmt.Errorf("runner: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("runner: GET %s: %s", src, resp.Status)
		}
		if _, err := io.Copy(w, resp.Body); err != nil {
			return "", fmt.Errorf("runner: GET %s: %w", src, err)
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != r.SHA256 {
		return "", fmt.Errorf("runner: sha256 mismatch for %s: got %s, want %s (runner.sha256); nothing was built", src, got, r.SHA256)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("runner: %w", err)
	}
	ok = true
	return f.Name(), nil
}
