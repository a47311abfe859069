package configs

import (
	"crypto/x509"
	"errors"
	"os"
)

// LoadCertPool reads a PEM file of CA certificates, as the config's CA files (sites' tls.ca_file,
// tls.acme.ca_root, cluster.tls.ca_file) and the bench's -ca-file name them. A file with no
// certificate in it is an error that names it.
func LoadCertPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New(path + ": no PEM certificate in it")
	}
	return pool, nil
}
