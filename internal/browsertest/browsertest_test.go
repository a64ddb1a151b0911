package browsertest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A form is clicked, posted and followed through a redirect, as a person
// would.
func TestClickFollowsAForm(t *testing.T) {
	var posted string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!DOCTYPE html><form method="post" action="/post"><input type="hidden" name="v" value="a&quot;b"><button id="go">Go</button></form>`)
	})
	mux.HandleFunc("POST /post", func(w http.ResponseWriter, r *http.Request) {
		posted = r.PostFormValue("v")
		http.Redirect(w, r, "/done?x=1", http.StatusFound)
	})
	mux.HandleFunc("GET /done", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `<!DOCTYPE html><p id="r">done `+r.URL.Query().Get("x")+`</p>`)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	b := Start(t)
	b.Open(srv.URL + "/")
	b.Click("#go")
	b.WaitFor("the redirect", `location.pathname === "/done" && document.readyState === "complete"`)
	if got := b.Text(); !strings.Contains(got, "done 1") || posted != `a"b` {
		t.Fatalf("page %q, posted %q", got, posted)
	}
}
