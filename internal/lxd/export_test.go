package lxd

// The label keys, for the tests that read an instance's config raw.
const (
	KeyOwner     = keyOwner
	KeyPool      = keyPool
	KeyJobID     = keyJobID
	KeyCreatedAt = keyCreatedAt
	KeyRunnerID  = keyRunnerID
	KeyOrg       = keyOrg
	KeyInstall   = keyInstall
)
