package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy/cluster"
	"github.com/spillway/spillway/proxy/runtime"
)

// joinTimeout bounds how long a replica waits at start for the fleet to make room for it.
// The others hand over once their requests in flight fit their smaller shares (at most
// cluster.DefaultSettleTimeout each) — past this, something is wrong, and start fails.
const joinTimeout = time.Minute

// checkCluster refuses a cluster section whose etcd TLS files run could not use (preflight:
// validate refuses it too).
func checkCluster(cfg *configs.Config) configs.Errors {
	_, err := clusterTLS(cfg)
	var fe *cluster.FileError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		key := "cluster.etcd.tls." + fe.Key
		t := cfg.Cluster.Etcd.TLS
		resolved := map[string]string{"ca_file": t.CAFile, "cert_file": t.CertFile}[fe.Key]
		return configs.Errors{cfg.Errorf(key, "%s%v", written(cfg, key, resolved), fe.Err)}
	}
	return configs.Errors{cfg.Errorf("cluster.etcd.tls", "%v", err)}
}

func clusterTLS(cfg *configs.Config) (*tls.Config, error) {
	cl := cfg.Cluster
	if cl == nil || cl.Etcd.TLS == nil {
		return nil, nil
	}
	t := cl.Etcd.TLS
	return cluster.ClientTLS(t.CAFile, t.CertFile, t.KeyFile)
}

// openFleet registers this proxy in the fleet of cfg.Cluster (etcd must answer: a replica
// that cannot reach its fleet at start does not start), enforcing its share of every
// backend's limit on r's registry from now on: nothing until the fleet has made room for it
// (joinFleet waits for that).
func openFleet(ctx context.Context, cfg *configs.Config, r *runtime.Reloader, log *zap.Logger) (*cluster.Fleet, error) {
	cl := cfg.Cluster
	tc, err := clusterTLS(cfg)
	if err != nil {
		return nil, fmt.Errorf("cluster.etcd.tls: %w", err)
	}
	o := cluster.Options{Name: cl.Name, Node: cl.Node, Endpoints: cl.Etcd.Endpoints, TLS: tc,
		Lease: cl.Lease, Log: log.Named("cluster"),
		OnShare: func(s *cluster.Share) { r.Registry().SetShare(s) },
		Settled: r.WithinLimits}
	if cl.Shares == "demand" {
		o.Demand = r.Demand
	}
	f, err := cluster.Open(o)
	if err != nil {
		return nil, err
	}
	if err := f.Start(ctx); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// joinFleet shows the fleet in the state API and the metrics, and waits until the fleet
// has made room for this replica (it holds its share of the limits).
func joinFleet(ctx context.Context, f *cluster.Fleet, cfg *configs.Config, r *runtime.Reloader, reg prometheus.Registerer, log *zap.Logger) error {
	if err := f.RegisterMetrics(reg); err != nil {
		return err
	}
	r.SetCluster(func() runtime.ClusterState {
		st := f.Status()
		return runtime.ClusterState{Name: st.Name, Node: st.Node, Members: st.Members, Store: st.Store, Joined: st.Joined}
	})
	cl := cfg.Cluster
	t := time.NewTimer(joinTimeout)
	defer t.Stop()
	select {
	case <-f.Joined():
		log.Info("joined the fleet", zap.String("cluster", cl.Name), zap.String("node", cl.Node),
			zap.Strings("members", f.Status().Members))
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("cluster %s: the fleet did not make room for node %s within %s (members: %v)",
			cl.Name, cl.Node, joinTimeout, f.Status().Members)
	}
}
