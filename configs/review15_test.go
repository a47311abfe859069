package configs_test

import (
	"strings"
	"testing"

	"github.com/spillway/spillway/configs"
)

// BUG (validation of cluster.etcd.endpoints, hostile endpoints): an endpoint with a user and
// password ("http://root:secret@10.0.0.5:2379") or a fragment is accepted. The etcd client
// drops the userinfo in silence (etcd authentication is not done, the operator believes it
// is), and the endpoints as written are logged (cluster: "cluster store unavailable" logs
// endpoints; a failed start prints them), so the password lands in the logs. Cause:
// configs/cluster.go, (*validator).cluster: the endpoint check looks at scheme, host, port,
// path and query, not at u.User or u.Fragment. Fix: refuse both (say that etcd users are
// not supported, or add cluster.etcd.username/password_file).
func TestReview15HostileEtcdEndpoints(t *testing.T) {
	t.Parallel()
	for _, ep := range []string{
		"http://root:secret@10.0.0.5:2379",
		"http://root@10.0.0.5:2379",
		"http://10.0.0.5:2379#frag",
	} {
		src := okSites + "cluster:\n  name: prod\n  node: n1\n  etcd: {endpoints: [\"" + ep + "\"]}\n"
		_, err := configs.Parse("review15.yaml", []byte(src))
		if err == nil || !strings.Contains(err.Error(), "cluster.etcd.endpoints[0]") {
			t.Errorf("endpoint %q: accepted (err %v), want it refused at cluster.etcd.endpoints[0]", ep, err)
		}
	}
}

// Validation bounds that hold (worth keeping): lease 0, a huge lease, a negative or huge
// drain_delay, a port 0 or out of range are refused.
func TestReview15ClusterBounds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ src, path string }{
		{"cluster:\n  name: prod\n  node: n1\n  lease: 0s\n  etcd: {endpoints: [\"http://a:2379\"]}\n", "cluster.lease"},
		{"cluster:\n  name: prod\n  node: n1\n  lease: 2562047h\n  etcd: {endpoints: [\"http://a:2379\"]}\n", "cluster.lease"},
		{"cluster:\n  name: prod\n  node: n1\n  etcd: {endpoints: [\"http://a:0\"]}\n", "cluster.etcd.endpoints[0]"},
		{"cluster:\n  name: prod\n  node: n1\n  etcd: {endpoints: [\"http://a:99999\"]}\n", "cluster.etcd.endpoints[0]"},
		{"cluster:\n  name: prod\n  node: n1\n  etcd: {endpoints: [\"unix:///run/etcd.sock\"]}\n", "cluster.etcd.endpoints[0]"},
		{"timeouts: {drain_delay: 2562047h}\n", "timeouts.drain_delay"},
	} {
		_, err := configs.Parse("review15.yaml", []byte(okSites+tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("%q: err %v, want it refused at %s", tc.src, err, tc.path)
		}
	}
}

// BUG (hostile/mistyped endpoints): a list that mixes https:// and http:// endpoints is
// accepted (with tls set, too). The etcd client (v3.7 client.go:312) picks the transport
// credentials of the FIRST endpoint for the whole connection: with http:// first, every
// member — the https:// ones included — is dialled in clear text (the fleet's state and
// audit trail cross sites unencrypted, or the TLS members just fail); with https:// first,
// the http:// member is unusable and the fleet silently has one member fewer to fail over
// to. Cause: configs/cluster.go, (*validator).cluster only refuses tls when every endpoint
// is http://. Fix: refuse a mix of schemes (and http:// endpoints when tls is set).
func TestReview15MixedEtcdSchemes(t *testing.T) {
	t.Parallel()
	src := okSites + "cluster:\n  name: prod\n  node: n1\n  etcd:\n    endpoints: [\"http://10.0.2.5:2379\", \"https://10.0.1.5:2379\"]\n    tls: {ca_file: ca.pem}\n"
	_, err := configs.Parse("review15.yaml", []byte(src))
	if err == nil || !strings.Contains(err.Error(), "cluster.etcd") {
		t.Fatalf("https and http endpoints with tls: accepted (err %v): the client would dial every member in clear text", err)
	}
}
