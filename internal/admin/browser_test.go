package admin_test

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin/admintest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
)

const chromiumPath = "/usr/bin/chromium"

// chromium runs headless Chromium on url with extra flags and returns its
// standard output. It skips the test when Chromium is not installed.
func chromium(t *testing.T, url string, extra ...string) []byte {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		fleettest.Missing(t, "%s not found: install Debian's chromium package to run the browser test", chromiumPath)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(),
	}, extra...)
	cmd := exec.CommandContext(ctx, chromiumPath, append(args, url)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", extra, err, stderr.String())
	}
	return stdout.Bytes()
}

func TestBrowser(t *testing.T) {
	srv := httptest.NewServer(newHandler(admintest.New()))
	defer srv.Close()

	t.Run("dom", func(t *testing.T) {
		dom := string(chromium(t, srv.URL+"/", "--dump-dom"))
		for _, want := range []string{
			"<title>lxd-gha-autoscaler</title>", `id="ready" class="ok"`,
			`id="pool-linux"`, `id="pool-gpu"`, ">linux<", ">gpu<",
			`id="job-1001"`, `id="job-1002"`, `id="job-1003"`, `id="job-1004"`,
		} {
			if !strings.Contains(dom, want) {
				t.Errorf("DOM lacks %s", want)
			}
		}
		// Job 1001 spent 10s waiting, 10s booting and 60s running. (The
		// screenshot test checks that the widths are also drawn.)
		row := regexp.MustCompile(`(?s)<tr class="job" id="job-1001".*?</tr>`).FindString(dom)
		for _, want := range []string{`class="wait nz" style="width:12.5%"`, `class="boot nz" style="width:12.5%"`, `class="run nz" style="width:75.0%"`} {
			if !strings.Contains(row, want) {
				t.Errorf("job 1001's bar lacks %s: %s", want, row)
			}
		}
		if n := strings.Count(dom, `<span class="bar">`); n != 2 {
			t.Errorf("%d bars, want 2 (jobs 1001 and 1002)", n)
		}
	})

	t.Run("screenshot", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "status.png")
		chromium(t, srv.URL+"/", "--screenshot="+file, "--window-size=1200,800", "--hide-scrollbars")
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("screenshot is not a PNG: %v", err)
		}
		if sz := img.Bounds().Size(); sz.X < 1000 || sz.Y < 600 {
			t.Errorf("screenshot %v, want about 1200x800", sz)
		}
		if n := colours(img); n < 8 {
			t.Errorf("screenshot has %d colours: blank page?", n)
		}
		// The bars are drawn with their widths, so the inline styles passed
		// the page's Content-Security-Policy: job 1001's 220px bar splits
		// 12.5/12.5/75 %, job 1002's (no run yet) 44.4/55.6/0 %; 1002
		// is listed first.
		bars := barRuns(img)
		want := [][3]int{{98, 122, 0}, {27, 28, 165}}
		if len(bars) != len(want) {
			t.Fatalf("found bars %v, want %v (wait, boot, run in px)", bars, want)
		}
		for i := range want {
			for k := range 3 {
				if d := bars[i][k] - want[i][k]; d < -2 || d > 2 {
					t.Errorf("bar %d is %v px, want about %v", i, bars[i], want[i])
				}
			}
		}
		// To look at it: LXDGHA_SCREENSHOT=/tmp/status.png go test -run Browser ./internal/admin
		if keep := os.Getenv("LXDGHA_SCREENSHOT"); keep != "" {
			if err := os.WriteFile(keep, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// The bar colours of the page's CSS.
var (
	waitRGB = [3]uint8{0xe8, 0xa3, 0x3d}
	bootRGB = [3]uint8{0x4a, 0x90, 0xd9}
	runRGB  = [3]uint8{0x43, 0xa8, 0x66}
)

// barRuns finds the time bars in a screenshot: rows of pixels made of a
// run of the wait colour, then boot, then run, each possibly empty, at
// least 50px in all (which leaves out the legend's small squares). It
// returns each bar's three widths once, top to bottom.
func barRuns(img image.Image) [][3]int {
	r := img.Bounds()
	at := func(x, y int) [3]uint8 {
		c0, c1, c2, _ := img.At(x, y).RGBA()
		return [3]uint8{uint8(c0 >> 8), uint8(c1 >> 8), uint8(c2 >> 8)}
	}
	var out [][3]int
	lastY := -10
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; {
			var w [3]int
			x0 := x
			for k, rgb := range [][3]uint8{waitRGB, bootRGB, runRGB} {
				for x < r.Max.X && at(x, y) == rgb {
					w[k]++
					x++
				}
			}
			if x == x0 {
				x++
				continue
			}
			if w[0]+w[1]+w[2] < 50 {
				continue
			}
			// A bar is several rows high, and its rounded corners make
			// the edge rows shorter: keep the widest row.
			sum := func(w [3]int) int { return w[0] + w[1] + w[2] }
			if y == lastY+1 && len(out) > 0 {
				if sum(w) > sum(out[len(out)-1]) {
					out[len(out)-1] = w
				}
			} else {
				out = append(out, w)
			}
			lastY = y
		}
	}
	return out
}

// colours counts distinct colours, up to 1000.
func colours(img image.Image) int {
	seen := map[[4]uint32]bool{}
	r := img.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y += 2 {
		for x := r.Min.X; x < r.Max.X; x += 2 {
			c0, c1, c2, c3 := img.At(x, y).RGBA()
			seen[[4]uint32{c0, c1, c2, c3}] = true
			if len(seen) >= 1000 {
				return len(seen)
			}
		}
	}
	return len(seen)
}
