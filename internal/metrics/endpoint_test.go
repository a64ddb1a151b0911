package metrics

import "testing"

func TestEndpointOf(t *testing.T) {
	for path, want := range map[string]string{
		"/app/installations/123/access_tokens":            "/app/installations/{id}/access_tokens",
		"/api/v3/app/installations/123/access_tokens":     "/app/installations/{id}/access_tokens",
		"/app/installations/123":                          "/app/installations/{id}",
		"/app/hook/deliveries":                            "/app/hook/deliveries",
		"/app/hook/deliveries/":                           "/app/hook/deliveries",
		"/app/hook/deliveries/80000001":                   "/app/hook/deliveries/{id}",
		"/app/hook/deliveries/80000001/attempts":          "/app/hook/deliveries/{id}/attempts",
		"/orgs/acme/actions/runners":                      "/orgs/{org}/actions/runners",
		"/orgs/acme/actions/runners/55":                   "/orgs/{org}/actions/runners/{id}",
		"/api/v3/orgs/acme/actions/runners/55":            "/orgs/{org}/actions/runners/{id}",
		"/orgs/acme/actions/runners/generate-jitconfig":   "/orgs/{org}/actions/runners/generate-jitconfig",
		"/orgs/acme/actions/runner-groups":                "/orgs/{org}/actions/runner-groups",
		"/orgs/acme/actions/runner-groups/3":              "/orgs/{org}/actions/runner-groups/{id}",
		"/orgs/acme/actions/runner-groups/3/repositories": "/orgs/{org}/actions/runner-groups/{id}/repositories",
		"/app/installations":                              "/app/installations",
		"/orgs/app/actions/runners/7":                     "/orgs/{org}/actions/runners/{id}", // an org named "app"
		"/orgs/orgs/actions/runners":                      "/orgs/{org}/actions/runners",
		"/prefix/app/app/installations/1/access_tokens":   "/app/installations/{id}/access_tokens", // a base path ending in "app"
		"/orgs/acme/actions/runners/not-a-number":         EndpointOther,
		"/orgs/acme/actions/runners/55/labels":            EndpointOther,
		"/repos/acme/widget/actions/runners":              EndpointOther,
		"/repos/acme/widget/actions/jobs/42":              "/repos/{owner}/{repo}/actions/jobs/{id}",
		"/api/v3/repos/acme/widget/actions/jobs/42":       "/repos/{owner}/{repo}/actions/jobs/{id}",
		"/repos/acme/widget/actions/jobs/x":               EndpointOther,
		"/app/installations/-1/access_tokens":             EndpointOther,
		"/":                                               EndpointOther,
		"":                                                EndpointOther,
		"/orgs/acme/actions/runners/99999999999999999999": EndpointOther, // beyond uint64
	} {
		if got := endpointOf(path); got != want {
			t.Errorf("endpointOf(%q) = %q, want %q", path, got, want)
		}
	}
}
