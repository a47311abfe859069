package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// The proxies the overhead scenario measures, each with the config the bench writes for it:
// a plain reverse proxy to the one backend, so that what is compared is the proxying.

// overheadPath is one way to the backend: straight, or through one proxy.
type overheadPath struct {
	name  string
	start func(ctx context.Context, dir, backend string) (url string, c *child, err error)
}

func spillwayPath(bin string) overheadPath {
	return overheadPath{name: "spillway", start: func(ctx context.Context, dir, backend string) (string, *child, error) {
		addr, err := freePort()
		if err != nil {
			return "", nil, err
		}
		cfg := fmt.Sprintf("listen: {http: %q}\nsites:\n  - name: origin\n    weight: 1\n    backends: [\"http://%s\"]\n    max_inflight: 10000\n", addr, backend)
		path := filepath.Join(dir, "spillway.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return "", nil, err
		}
		c, err := startChild(dir, "spillway", bin, "run", "-config", path, "-log-level", "error")
		return "http://" + addr + "/", c, err
	}}
}

func nginxPath(bin string) overheadPath {
	return overheadPath{name: "nginx", start: func(ctx context.Context, dir, backend string) (string, *child, error) {
		addr, err := freePort()
		if err != nil {
			return "", nil, err
		}
		d := filepath.Join(dir, "nginx")
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", nil, err
		}
		cfg := fmt.Sprintf(`# written by spillway bench: nginx as a plain reverse proxy to one backend
worker_processes 2;
daemon off;
master_process on;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;  # as the Go proxies and HAProxy: no forced reconnects
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    upstream backend {
        server %[2]s;
        keepalive 256;
        keepalive_requests 1000000;
    }
    server {
        listen %[3]s;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`, d, backend, addr)
		path := filepath.Join(d, "nginx.conf")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return "", nil, err
		}
		c, err := startChild(dir, "nginx", bin, "-e", filepath.Join(d, "error.log"), "-p", d, "-c", path)
		return "http://" + addr + "/", c, err
	}}
}

func haproxyPath(bin string) overheadPath {
	return overheadPath{name: "haproxy", start: func(ctx context.Context, dir, backend string) (string, *child, error) {
		addr, err := freePort()
		if err != nil {
			return "", nil, err
		}
		cfg := fmt.Sprintf(`# written by spillway bench: HAProxy as a plain reverse proxy to one backend
global
    nbthread 2
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend bench
    bind %s
    default_backend origin
backend origin
    server origin %s
`, addr, backend)
		path := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return "", nil, err
		}
		c, err := startChild(dir, "haproxy", bin, "-f", path, "-db")
		return "http://" + addr + "/", c, err
	}}
}
