//go:build !unix

package store

import (
	"io/fs"
	"os"
)

// keepOwner does nothing where files have no Unix owner.
func keepOwner(*os.File, fs.FileInfo) {}

// lockFile does not lock where there is no flock; the file is opened for its Close.
func lockFile(path string) (*os.File, error) {
	return os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
}

// syncDir does nothing where directories cannot be synced.
func syncDir(string) error { return nil }
