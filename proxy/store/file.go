package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// FormatVersion is the version of the state file's format. A file of another version is
// refused, not guessed at.
const FormatVersion = 1

// fileData is the state file's content.
type fileData struct {
	Version int      `json:"version"`
	State   State    `json:"state"`
	NextID  uint64   `json:"next_id"`
	Trail   []Change `json:"trail"` // newest first
}

// File is a Store in one JSON file (`state.file`): every Commit rewrites it atomically — a
// temporary file in the same directory, written, synced, renamed over the old one, and the
// directory synced — so a crash leaves either the old file or the new one, never a mix.
type File struct {
	path string
	lock *os.File // held open: the lock on path+".lock"

	mu    sync.Mutex
	state State
	trail trail
}

var _ Store = (*File)(nil)

// OpenFile opens the state file at path, creating it (empty) when it does not exist, so that
// a directory that cannot be written is found at start-up and not at the first change. A
// file that cannot be read or parsed, or is of another format version, is an error that
// names the file and what is wrong with it. keep bounds the audit entries kept (0:
// DefaultTrail).
//
// A path that is a symbolic link is followed, and the file it points to is the one
// rewritten: the link stays (an operator's link to a mounted volume, say).
func OpenFile(path string, keep int) (*File, error) {
	real, err := followLinks(path)
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	lock, err := lockFile(real)
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	f := &File{path: real, lock: lock, state: State{}.Clone(), trail: trail{max: keep}}
	d, err := readFile(real)
	if errors.Is(err, fs.ErrNotExist) {
		err = f.writeLocked()
	}
	if err != nil {
		lock.Close()
		return nil, err
	}
	if d.State.Overrides != nil {
		f.state.Overrides = d.State.Overrides
	}
	if d.State.Drains != nil {
		f.state.Drains = d.State.Drains
	}
	f.trail.entries, f.trail.next = d.Trail, d.NextID
	// An ID is never given twice, whatever next_id says (a file restored or edited by hand).
	for _, c := range d.Trail {
		f.trail.next = max(f.trail.next, c.ID+1)
	}
	if n := cmp0(keep, DefaultTrail); len(f.trail.entries) > n {
		f.trail.entries = f.trail.entries[:n]
	}
	return f, nil
}

// CheckFile reports what OpenFile would refuse of the file at path, writing nothing: a file
// that cannot be read, or is corrupt, or of another format. A missing file is nil (OpenFile
// creates it; whether it can is the caller's to check).
func CheckFile(path string) error {
	_, err := readFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// readFile reads and parses the state file at path; a missing file is fs.ErrNotExist.
func readFile(path string) (fileData, error) {
	var d fileData
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return d, err
	}
	if err != nil {
		return d, fmt.Errorf("state file %s: %w", path, err)
	}
	corrupt := func(err error) error {
		return fmt.Errorf("state file %s is corrupt (%v): it holds the operators' drains and weight overrides, so Spillway will not start without it; restore it from a backup, or move it away to start with none", path, err)
	}
	// The version first, leniently: a newer Spillway's file (with fields this one does not
	// know) is not corrupt, and must not be called so — moving it away loses its drains.
	var v struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return d, corrupt(err)
	}
	if v.Version == nil {
		return d, corrupt(errors.New(`no "version"`))
	}
	if *v.Version != FormatVersion {
		return d, fmt.Errorf("state file %s has format version %d; this Spillway reads version %d (a newer Spillway's file: run that version, or restore this version's backup)", path, *v.Version, FormatVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil || dec.More() {
		if err == nil {
			err = errors.New("data after the JSON object")
		}
		return d, corrupt(err)
	}
	return d, nil
}

// Path is the file's path.
func (f *File) Path() string { return f.path }

// Load returns the state read at OpenFile, with every Commit since.
func (f *File) Load(context.Context) (State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state.Clone(), nil
}

// Commit applies the edits and appends c, and writes the file; when the write fails,
// nothing changes.
func (f *File) Commit(_ context.Context, c Change, edits ...Edit) (Change, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	oldState, oldTrail := f.state, f.trail
	f.state = f.state.Clone()
	f.state.Apply(edits...)
	f.trail.entries = append([]Change(nil), f.trail.entries...)
	c = f.trail.add(c)
	if err := f.writeLocked(); err != nil {
		f.state, f.trail = oldState, oldTrail
		return Change{}, err
	}
	return c, nil
}

// Changes returns a page of the trail, newest first.
func (f *File) Changes(_ context.Context, before uint64, limit int) ([]Change, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	page, total := f.trail.page(before, limit)
	return page, total, nil
}

// Durable is true.
func (f *File) Durable() bool { return true }

// Close releases the file's lock; every Commit is on disk when it returns.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lock == nil {
		return nil
	}
	err := f.lock.Close()
	f.lock = nil
	return err
}

func (f *File) writeLocked() error {
	data, err := json.MarshalIndent(fileData{Version: FormatVersion, State: f.state, NextID: max(f.trail.next, 1), Trail: f.trail.entries}, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if err := WriteAtomic(f.path, data, nil); err != nil {
		return fmt.Errorf("state file %s: %w", f.path, err)
	}
	return nil
}

// Target is the file a state file's path names, symbolic links followed (the file OpenFile
// writes, in the directory where it must be able to create a temporary file).
func Target(path string) (string, error) { return followLinks(path) }

// followLinks returns the file path names after symbolic links, the last one included even
// when what it points to does not exist yet.
func followLinks(path string) (string, error) {
	for range 40 {
		fi, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) || err == nil && fi.Mode()&fs.ModeSymlink == 0 {
			return path, nil
		}
		if err != nil {
			return "", err
		}
		to, err := os.Readlink(path)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(to) {
			to = filepath.Join(filepath.Dir(path), to)
		}
		path = to
	}
	return "", errors.New("too many levels of symbolic links")
}

// WriteAtomic replaces the file at path with data: a temporary file beside it, written,
// given the old file's mode and owner (0600 and the process's when new), synced, renamed
// over it, and the directory synced, so that a crash leaves the old file or the new one,
// never a mix, and the rename itself is on disk. check, when set, runs just before the
// rename; its error stops it (nothing is replaced).
func WriteAtomic(path string, data []byte, check func() error) error {
	dir := filepath.Dir(path)
	mode := os.FileMode(0o600)
	old, err := os.Stat(path)
	if err == nil {
		mode = old.Mode().Perm()
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing left to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if old != nil {
		keepOwner(tmp, old)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if check != nil {
		if err := check(); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}
