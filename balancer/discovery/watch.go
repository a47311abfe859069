package discovery

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// settle is how long a watch waits after the last event in a burst before it reports a
// change, so that a save that writes, renames and chmods is read once, complete.
const settle = 100 * time.Millisecond

// configMapData is the symlink a Kubernetes ConfigMap or Secret volume swaps to update its
// files at once: each file is a symlink "name -> ..data/name", and ..data is replaced by a
// rename, so the file itself sees no event.
const configMapData = "..data"

// FileWatch reports changes of one file. It watches the file's directory, not the file, so
// that it sees the ways files are really replaced: an editor's save by rename, and the
// symlink swap of a Kubernetes ConfigMap volume. Used by discovery's targets files and by
// the proxy's config reload.
type FileWatch struct {
	// C gets a value once a burst of changes has settled. It holds at most one: a change
	// while the previous one is unread is folded into it.
	C <-chan struct{}

	c    chan struct{}
	w    *fsnotify.Watcher
	base string
	log  *zap.Logger
}

// WatchFile starts watching path's directory (nothing runs until Run). log gets watch
// errors; nil: none.
func WatchFile(path string, log *zap.Logger) (*FileWatch, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	if err := w.Add(filepath.Dir(path)); err != nil {
		_ = w.Close()
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	c := make(chan struct{}, 1)
	return &FileWatch{C: c, c: c, w: w, base: filepath.Base(path), log: log}, nil
}

// Run reports changes on C until ctx ends, then closes the watch.
func (fw *FileWatch) Run(ctx context.Context) {
	defer fw.w.Close()
	settled := time.NewTimer(settle)
	settled.Stop()
	defer settled.Stop()
	events, errs := fw.w.Events, fw.w.Errors
	for {
		select {
		case <-ctx.Done():
			return
		case <-settled.C:
			select {
			case fw.c <- struct{}{}:
			default: // one is already waiting to be read
			}
		case ev, ok := <-events:
			if !ok {
				events = nil
			} else if fw.matters(ev) {
				settled.Reset(settle) // restart the wait: report once the burst is over
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			fw.log.Warn("watching a file", zap.String("name", fw.base), zap.Error(err))
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				settled.Reset(settle) // events were lost: report in case one mattered
			}
		}
	}
}

// matters reports whether ev, from the watched directory, may have changed the file: an
// event on the file's name or on ..data. Chmod alone changes no content.
func (fw *FileWatch) matters(ev fsnotify.Event) bool {
	if !ev.Has(fsnotify.Create | fsnotify.Write | fsnotify.Remove | fsnotify.Rename) {
		return false
	}
	base := filepath.Base(ev.Name)
	return base == fw.base || base == configMapData
}
