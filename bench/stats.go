package main

import (
	"math"
	"slices"
	"time"
)

// percentile returns the p-th percentile (0..100) of xs by nearest rank; xs
// is sorted in place. It returns NaN for an empty slice.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	slices.Sort(xs)
	i := int(math.Ceil(p/100*float64(len(xs)))) - 1
	i = max(0, min(i, len(xs)-1))
	return xs[i]
}

// summary is a metric over several runs.
type summary struct {
	Metric           // Value is the median
	Min, Max float64 //
	N        int     // runs that reported it
}

// summarize folds the runs of one scenario into one summary per metric name,
// in the order names first appeared.
func summarize(runs []Result) []summary {
	var order []string
	vals := map[string][]float64{}
	first := map[string]Metric{}
	for _, r := range runs {
		for _, m := range r.Metrics {
			if _, ok := first[m.Name]; !ok {
				order = append(order, m.Name)
				first[m.Name] = m
			}
			vals[m.Name] = append(vals[m.Name], m.Value)
		}
	}
	out := make([]summary, 0, len(order))
	for _, n := range order {
		v := vals[n]
		slices.Sort(v)
		med := v[len(v)/2]
		if len(v)%2 == 0 {
			med = (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
		m := first[n]
		m.Value = med
		out = append(out, summary{Metric: m, Min: v[0], Max: v[len(v)-1], N: len(v)})
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
