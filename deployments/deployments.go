// Package deployments holds the files an operator installs beside the
// binary (see README.md here). The binary embeds the GitHub App manifest,
// which `lxd-gha-autoscaler setup` posts to GitHub, so that setup needs no
// checkout of the repository.
package deployments

import _ "embed" // for the manifest

// AppManifest is github-app/manifest.json: the GitHub App the service
// needs, with ORG and runners.example.com for setup to fill in.
//
//go:embed github-app/manifest.json
var AppManifest []byte
