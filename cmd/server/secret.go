package main

import (
	"fmt"
	"io"
	"io/fs"
	"os"
)

// secretOpenBits are the permission bits a secret file must not have:
// any access for its group or for others.
const secretOpenBits fs.FileMode = 0o077

// looseModeError is a secret file that others than its owner may read or
// change.
type looseModeError struct {
	path string
	mode fs.FileMode
}

func (e *looseModeError) Error() string {
	var who string
	switch g, o := e.mode&0o070 != 0, e.mode&0o007 != 0; {
	case g && o:
		who = "its group and others"
	case g:
		who = "its group"
	default:
		who = "others"
	}
	return fmt.Sprintf("%s is mode %04o, open to %s: a secret must be its owner's alone; chmod 600 %s",
		e.path, e.mode, who, e.path)
}

// readSecret reads a file that holds a secret: the App's private key, the
// webhook secret, the admin token, the database password or the LXD
// client key. Like ssh with a private key, it refuses a file that its
// group or others may read or write: whoever can read it can forge
// webhooks or act as the App, and whoever can write it can swap it. The
// mode is checked on the open file, so a rename in between cannot slip
// another file past it; a symbolic link is judged by its target.
func readSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if m := fi.Mode().Perm(); m&secretOpenBits != 0 {
		return nil, &looseModeError{path: path, mode: m}
	}
	return io.ReadAll(f)
}
