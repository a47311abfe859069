package balancer

// schedule returns the smooth weighted round-robin order of sites for weights (the
// algorithm of nginx's upstream module): one period, as long as the sum of the weights
// divided by their greatest common divisor. Site i appears weights[i]/gcd times per period,
// spread as evenly as the weights allow (5:3:2 → 0 1 2 0 0 1 0 2 1 0), so any window of
// sum(weights) consecutive picks holds exactly weights[i] of site i: the splitter walks
// the period cyclically, and every such window is one full period, rotated.
//
// Sites with weight 0 never appear. With every weight 0 the schedule is empty.
func schedule(weights []int) []int32 {
	g := 0
	for _, w := range weights {
		g = gcd(g, w)
	}
	if g == 0 {
		return nil
	}
	total := 0
	for _, w := range weights {
		total += w / g
	}
	seq := make([]int32, total)
	current := make([]int, len(weights))
	for n := range seq {
		best := -1
		for i, w := range weights {
			current[i] += w / g
			if w > 0 && (best < 0 || current[i] > current[best]) {
				best = i
			}
		}
		current[best] -= total
		seq[n] = int32(best)
	}
	return seq
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
