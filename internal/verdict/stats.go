package verdict

import (
	"math"
	"slices"
)

// mannKendall returns the Mann–Kendall statistic of ys in time order and
// its normal score: how surely the series trends up (z > 0) or down, against
// its own noise, whatever the trend's shape. Ties (a count that stays put)
// shrink the variance, as the test prescribes.
func mannKendall(ys []float64) (s, z float64) {
	n := len(ys)
	for i := range n {
		for j := i + 1; j < n; j++ {
			switch {
			case ys[j] > ys[i]:
				s++
			case ys[j] < ys[i]:
				s--
			}
		}
	}
	variance := float64(n*(n-1)*(2*n+5)) / 18
	for _, t := range tieSizes(ys) {
		variance -= float64(t*(t-1)*(2*t+5)) / 18
	}
	if variance <= 0 {
		return s, 0
	}
	// Continuity correction: s moves in steps of 2 around 0.
	switch {
	case s > 0:
		z = (s - 1) / math.Sqrt(variance)
	case s < 0:
		z = (s + 1) / math.Sqrt(variance)
	}
	return s, z
}

// tieSizes are the sizes of the groups of equal values in ys, for groups
// of two or more.
func tieSizes(ys []float64) []int {
	sorted := slices.Clone(ys)
	slices.Sort(sorted)
	var sizes []int
	for i := 0; i < len(sorted); {
		j := i + 1
		for j < len(sorted) && sorted[j] == sorted[i] {
			j++
		}
		if j-i > 1 {
			sizes = append(sizes, j-i)
		}
		i = j
	}
	return sizes
}

// theilSen is the median of the slopes between every two points: a line
// fit that a few outliers or a noisy stretch cannot drag. xs must rise.
func theilSen(xs, ys []float64) float64 {
	slopes := make([]float64, 0, len(xs)*(len(xs)-1)/2)
	for i := range xs {
		for j := i + 1; j < len(xs); j++ {
			if dx := xs[j] - xs[i]; dx > 0 {
				slopes = append(slopes, (ys[j]-ys[i])/dx)
			}
		}
	}
	return median(slopes)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	sorted := slices.Clone(xs)
	slices.Sort(sorted)
	mid := len(sorted) / 2
	if len(sorted)%2 == 1 {
		return sorted[mid]
	}
	return (sorted[mid-1] + sorted[mid]) / 2
}
