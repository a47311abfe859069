package runtime

import (
	"context"
	"path/filepath"
	"sync"

	"go.uber.org/zap"

	"github.com/spillway/spillway/balancer/discovery"
)

// Watch reloads the config each time its file changes — an editor's save (in place or by
// rename), a Kubernetes ConfigMap's symlink swap — once the burst of changes has settled,
// until ctx ends. A change that leaves the file's content as it was reloads nothing. When
// the config path is a symlink, the directory it points into is watched too.
func (r *Reloader) Watch(ctx context.Context) error {
	paths := []string{r.opts.Path}
	if real, err := filepath.EvalSymlinks(r.opts.Path); err == nil && filepath.Dir(real) != filepath.Dir(r.opts.Path) {
		paths = append(paths, real)
	}
	changed := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	for i, p := range paths {
		fw, err := discovery.WatchFile(p, r.log)
		if err != nil {
			if i == 0 {
				return err
			}
			// The file the link points to: the link's own directory is watched anyway.
			r.log.Warn("cannot watch where the config file's symlink points", zap.String("path", p), zap.Error(err))
			continue
		}
		wg.Go(func() { fw.Run(ctx) })
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-fw.C:
					select {
					case changed <- struct{}{}:
					default:
					}
				}
			}
		})
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			r.Reload("file", false) // a refusal is logged, once, with every problem
		}
	}
}
