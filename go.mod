module github.com/spillway/spillway

go 1.26.0

require (
	github.com/fsnotify/fsnotify v1.10.1
	github.com/miekg/dns v1.1.73
	go.uber.org/goleak v1.3.0
	go.uber.org/zap v1.28.0
	gopkg.in/yaml.v3 v3.0.1
)

require (
	go.uber.org/multierr v1.10.0 // indirect
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
)
