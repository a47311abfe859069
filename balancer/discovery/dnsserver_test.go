package discovery_test

import (
	"testing"

	"github.com/spillway/spillway/balancer/discovery/dnstest"
)

// The tests here use the shared loopback DNS server under short names.
type (
	dnsServer = dnstest.Server
	srvRecord = dnstest.SRV
)

const (
	answer   = dnstest.Answer
	servfail = dnstest.ServFail
	nxdomain = dnstest.NXDomain
	refused  = dnstest.Refused
	empty    = dnstest.Empty
	silent   = dnstest.Silent
)

func startDNS(t *testing.T) *dnsServer { return dnstest.Start(t) }
