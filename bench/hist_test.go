package bench

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketsCoverEveryValueWithinOnePercent(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	check := func(v int64) {
		lo, hi := bucketRange(bucketOf(v))
		if v < lo || v > hi {
			t.Fatalf("value %d in bucket %d = [%d, %d]", v, bucketOf(v), lo, hi)
		}
		if v >= 2*subBuckets && float64(hi-lo+1) > float64(lo)/subBuckets {
			t.Fatalf("bucket of %d is [%d, %d]: wider than 1/%d of its start", v, lo, hi, subBuckets)
		}
	}
	for v := int64(0); v < 5000; v++ {
		check(v)
	}
	for range 100000 {
		check(rng.Int64N(1 << 40))
	}
	check(1<<62 + 12345)
	// Buckets are contiguous: the next bucket starts right after this one ends.
	for i := 0; i < 40*subBuckets; i++ {
		_, hi := bucketRange(i)
		lo, _ := bucketRange(i + 1)
		if lo != hi+1 {
			t.Fatalf("bucket %d ends at %d, bucket %d starts at %d", i, hi, i+1, lo)
		}
	}
}

func TestQuantilesWithinBucketPrecision(t *testing.T) {
	for _, tc := range []struct {
		name string
		draw func(*rand.Rand) time.Duration
	}{
		{"uniform 0-100ms", func(r *rand.Rand) time.Duration { return time.Duration(r.Int64N(int64(100 * time.Millisecond))) }},
		{"log-normal", func(r *rand.Rand) time.Duration {
			return time.Duration(float64(time.Millisecond) * 50 * (1 + r.ExpFloat64()*r.ExpFloat64()))
		}},
		{"tiny exact values", func(r *rand.Rand) time.Duration { return time.Duration(r.IntN(200)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			var h Histogram
			var vals []time.Duration
			for range 20000 {
				d := tc.draw(rng)
				h.Record(d)
				vals = append(vals, d)
			}
			slices.Sort(vals)
			if h.Count() != uint64(len(vals)) || h.Min() != vals[0] || h.Max() != vals[len(vals)-1] {
				t.Fatalf("count %d min %s max %s; want %d %s %s", h.Count(), h.Min(), h.Max(), len(vals), vals[0], vals[len(vals)-1])
			}
			for _, q := range []float64{0, 0.01, 0.5, 0.9, 0.99, 0.999, 1} {
				rank := max(int(float64(len(vals))*q+0.999999), 1)
				exact := vals[rank-1]
				got := h.Quantile(q)
				// Quantile answers the top of the exact value's bucket: never below it,
				// never more than 1/128 above.
				if got < exact || float64(got-exact) > float64(exact)/subBuckets+1 {
					t.Errorf("q%.3f = %s, exact %s", q, got, exact)
				}
			}
		})
	}
}

func TestHistogramMergeAndEmpty(t *testing.T) {
	var empty Histogram
	if empty.Quantile(0.99) != 0 || empty.Mean() != 0 || empty.Max() != 0 {
		t.Fatal("an empty histogram answers 0")
	}
	var a, b, all Histogram
	for i := range 1000 {
		d := time.Duration(i) * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	a.Merge(&empty)
	for _, q := range []float64{0.1, 0.5, 0.99} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Errorf("merged q%.2f = %s, want %s", q, a.Quantile(q), all.Quantile(q))
		}
	}
	if a.Count() != 1000 || a.Min() != 0 || a.Max() != 999*time.Microsecond || a.Mean() != all.Mean() {
		t.Errorf("merged: count %d min %s max %s mean %s", a.Count(), a.Min(), a.Max(), a.Mean())
	}
	var neg Histogram
	neg.Record(-time.Second)
	if neg.Max() != 0 {
		t.Errorf("a negative value counts as 0, got max %s", neg.Max())
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	rng := rand.New(rand.NewPCG(1, 1))
	vals := make([]time.Duration, 1024)
	for i := range vals {
		vals[i] = time.Duration(rng.Int64N(int64(time.Second)))
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Record(vals[i%len(vals)])
	}
}
