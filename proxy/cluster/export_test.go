package cluster

// Crash stops f as a killed process would: it stops following the fleet and renewing its
// lease, and says nothing to etcd, so that the others find out when the lease runs out.
func (f *Fleet) Crash() {
	f.cancel()
	f.wg.Wait()
	f.c.Close()
}
