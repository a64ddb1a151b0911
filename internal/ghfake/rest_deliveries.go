package ghfake

// The stand-in's REST API for the App's webhook deliveries and redelivery.

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

type apiDelivery struct {
	ID             int64   `json:"id"`
	GUID           string  `json:"guid"`
	DeliveredAt    string  `json:"delivered_at"`
	Redelivery     bool    `json:"redelivery"`
	Duration       float64 `json:"duration"`
	Status         string  `json:"status"`
	StatusCode     int     `json:"status_code"`
	Event          string  `json:"event"`
	Action         *string `json:"action"`
	InstallationID int64   `json:"installation_id"`
	RepositoryID   *int64  `json:"repository_id"`
	ThrottledAt    *string `json:"throttled_at"`
}

// handleListDeliveries lists newest first with cursor pagination, like
// GitHub (Link: <...?cursor=...>; rel="next").
func (s *Server) handleListDeliveries(w http.ResponseWriter, r *http.Request) {
	perPage, _ := page(r)
	var before int64 = -1
	if c := r.URL.Query().Get("cursor"); c != "" {
		v, err := strconv.ParseInt(strings.TrimPrefix(c, "v1_"), 10, 64)
		if err != nil {
			writeError(w, http.StatusUnprocessableEntity, "Invalid cursor")
			return
		}
		before = v
	}
	s.mu.Lock()
	var out []apiDelivery
	more := false
	for i := len(s.deliveries) - 1; i >= 0; i-- {
		d := s.deliveries[i]
		if before >= 0 && d.id >= before {
			continue
		}
		if len(out) == perPage {
			more = true
			break
		}
		out = append(out, d.api(s.opts.InstallationID))
	}
	s.mu.Unlock()
	if more {
		u := url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path}
		q := url.Values{}
		q.Set("per_page", strconv.Itoa(perPage))
		q.Set("cursor", "v1_"+strconv.FormatInt(out[len(out)-1].ID, 10))
		u.RawQuery = q.Encode()
		w.Header().Set("Link", fmt.Sprintf("<%s>; rel=\"next\"", u.String()))
	}
	if out == nil {
		out = []apiDelivery{}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleRedeliver(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.deliveries {
		if d.id == id {
			s.redeliverLocked(d)
			writeJSON(w, http.StatusAccepted, map[string]any{})
			return
		}
	}
	writeError(w, http.StatusNotFound, "Not Found")
}
