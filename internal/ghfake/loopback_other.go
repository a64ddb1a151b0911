//go:build !linux

package ghfake

import "errors"

func bringUpLoopback() error { return errors.New("only supported on Linux") }
