// Package browsertest drives headless Chromium for tests, through the
// DevTools protocol over a pipe (--remote-debugging-pipe): open a page,
// read what it shows, click what a person would click, and wait for where
// that leads. It needs no dependency beyond Chromium itself, and skips a
// test when Chromium is not installed (CI installs Debian's chromium).
package browsertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Path is Debian's Chromium.
const Path = "/usr/bin/chromium"

// Flags start Chromium headless with nothing of its own on the network,
// as internal/admin's browser test does.
var Flags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
}

// Browser is one headless Chromium with one page.
type Browser struct {
	t       testing.TB
	cmd     *exec.Cmd
	toCh    *os.File // Chromium reads commands here (its fd 3)
	session string   // the page's

	mu      sync.Mutex
	nextID  int64
	waiting map[int64]chan reply
	closed  error // why the pipe from Chromium ended
	stderr  bytes.Buffer
}

type reply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// Start runs Chromium with a fresh profile and opens a blank page. It
// skips t when Chromium is not installed; it is stopped when t ends.
func Start(t testing.TB) *Browser {
	t.Helper()
	if _, err := os.Stat(Path); err != nil {
		t.Skipf("%s not found: install Debian's chromium package to run the browser test", Path)
	}
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	b := &Browser{t: t, toCh: cmdW, waiting: map[int64]chan reply{}}
	args := append(append([]string{}, Flags...), "--user-data-dir="+t.TempDir(), "--remote-debugging-pipe", "about:blank")
	b.cmd = exec.Command(Path, args...)
	b.cmd.ExtraFiles = []*os.File{cmdR, outW} // fds 3 and 4
	b.cmd.Stderr = &lockedWriter{mu: &b.mu, w: &b.stderr}
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", Path, err)
	}
	cmdR.Close()
	outW.Close()
	go b.read(outR)
	t.Cleanup(b.close)

	var target struct {
		TargetInfos []struct {
			TargetID string `json:"targetId"`
			Type     string `json:"type"`
		} `json:"targetInfos"`
	}
	if err := b.call("", "Target.getTargets", nil, &target); err != nil {
		t.Fatal(err)
	}
	id := ""
	for _, ti := range target.TargetInfos {
		if ti.Type == "page" {
			id = ti.TargetID
		}
	}
	if id == "" {
		var created struct {
			TargetID string `json:"targetId"`
		}
		if err := b.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &created); err != nil {
			t.Fatal(err)
		}
		id = created.TargetID
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call("", "Target.attachToTarget", map[string]any{"targetId": id, "flatten": true}, &att); err != nil {
		t.Fatal(err)
	}
	b.session = att.SessionID
	return b
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// read takes Chromium's messages, each JSON and ended by a NUL, and hands
// the replies to their callers; events are not used.
func (b *Browser) read(f *os.File) {
	r := bufio.NewReaderSize(f, 1<<20)
	var err error
	for {
		var msg []byte
		if msg, err = r.ReadBytes(0); err != nil {
			break
		}
		var m struct {
			ID int64 `json:"id"`
			reply
		}
		if json.Unmarshal(msg[:len(msg)-1], &m) != nil || m.ID == 0 {
			continue
		}
		b.mu.Lock()
		ch := b.waiting[m.ID]
		delete(b.waiting, m.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- m.reply
		}
	}
	b.mu.Lock()
	b.closed = fmt.Errorf("chromium's pipe: %w", err)
	for id, ch := range b.waiting {
		close(ch)
		delete(b.waiting, id)
	}
	b.mu.Unlock()
}

// call sends one command and decodes its result into out (when not nil).
func (b *Browser) call(session, method string, params any, out any) error {
	b.mu.Lock()
	if b.closed != nil {
		err := b.closed
		b.mu.Unlock()
		return err
	}
	b.nextID++
	id := b.nextID
	ch := make(chan reply, 1)
	b.waiting[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if params == nil {
		msg["params"] = map[string]any{}
	}
	if session != "" {
		msg["sessionId"] = session
	}
	raw, _ := json.Marshal(msg)
	if _, err := b.toCh.Write(append(raw, 0)); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return fmt.Errorf("%s: chromium went away: %s", method, b.stderrText())
		}
		if r.Error != nil {
			return fmt.Errorf("%s: %s", method, r.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(r.Result, out)
		}
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s: no answer from chromium in 30s", method)
	}
}

func (b *Browser) stderrText() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stderr.String()
}

func (b *Browser) close() {
	_ = b.call("", "Browser.close", nil, nil)
	done := make(chan struct{})
	go func() { _ = b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-done
	}
	b.toCh.Close()
}

// Open loads url in the page and waits until it has loaded.
func (b *Browser) Open(url string) {
	b.t.Helper()
	var nav struct {
		ErrorText string `json:"errorText"`
	}
	if err := b.call(b.session, "Page.navigate", map[string]any{"url": url}, &nav); err != nil {
		b.t.Fatal(err)
	}
	if nav.ErrorText != "" {
		b.t.Fatalf("open %s: %s", url, nav.ErrorText)
	}
	b.WaitFor("the page "+url+" to load", `document.readyState === "complete"`)
}

// Eval evaluates a JavaScript expression in the page and returns its
// value as JSON.
func (b *Browser) Eval(expr string) (json.RawMessage, error) {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := b.call(b.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r); err != nil {
		return nil, err
	}
	if r.ExceptionDetails != nil {
		return nil, errors.New(r.ExceptionDetails.Text)
	}
	return r.Result.Value, nil
}

// String evaluates expr, which must give a string.
func (b *Browser) String(expr string) string {
	b.t.Helper()
	v, err := b.Eval(expr)
	if err != nil {
		b.t.Fatalf("%s: %v", expr, err)
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		b.t.Fatalf("%s: not a string: %s", expr, v)
	}
	return s
}

// URL is where the page is.
func (b *Browser) URL() string { return b.String("location.href") }

// Text is what the page shows.
func (b *Browser) Text() string { return b.String("document.body ? document.body.innerText : ''") }

// Click clicks the element that the CSS selector names, as a person
// would: with the mouse, in its middle. It fails the test when there is
// none.
func (b *Browser) Click(selector string) {
	b.t.Helper()
	sel, _ := json.Marshal(selector)
	v, err := b.Eval(`(() => { const e = document.querySelector(` + string(sel) + `); if (!e) return null;
		e.scrollIntoView(); const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()`)
	if err != nil {
		b.t.Fatalf("find %s: %v", selector, err)
	}
	var at []float64
	if json.Unmarshal(v, &at) != nil || len(at) != 2 {
		b.t.Fatalf("no %s on %s:\n%s", selector, b.URL(), b.Text())
	}
	for _, typ := range []string{"mousePressed", "mouseReleased"} {
		if err := b.call(b.session, "Input.dispatchMouseEvent", map[string]any{
			"type": typ, "x": at[0], "y": at[1], "button": "left", "clickCount": 1,
		}, nil); err != nil {
			b.t.Fatalf("click %s: %v", selector, err)
		}
	}
}

// WaitFor waits until the JavaScript expression cond is true in the page,
// through navigations (a page being replaced cannot answer for a moment).
func (b *Browser) WaitFor(what, cond string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last string
	for {
		v, err := b.Eval(cond)
		if err == nil && string(v) == "true" {
			return
		}
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			where, _ := b.Eval("location.href")
			b.t.Fatalf("waiting for %s: still false at %s %s\n%s", what, where, last, strings.TrimSpace(b.stderrText()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}
