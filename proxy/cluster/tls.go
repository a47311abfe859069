package cluster

import (
	"crypto/tls"
	"fmt"

	"github.com/spillway/spillway/configs"
)

// FileError is a TLS file ClientTLS cannot use: Key names its key in cluster.etcd.tls.
type FileError struct {
	Key string // "ca_file" or "cert_file" (with key_file)
	Err error
}

func (e *FileError) Error() string { return e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

// ClientTLS is the TLS config for reaching etcd: caFile's certificates as roots (empty:
// the system's) and, when certFile and keyFile are set, a client certificate. Every file
// is read now: a problem names the file.
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := configs.LoadCertPool(caFile)
		if err != nil {
			return nil, &FileError{Key: "ca_file", Err: err}
		}
		tc.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, &FileError{Key: "cert_file", Err: fmt.Errorf("certificate %s and key %s: %w", certFile, keyFile, err)}
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
