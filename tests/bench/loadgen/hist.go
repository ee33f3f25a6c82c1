package main

import (
	"math"
	"math/bits"
)

// histogram counts durations in nanoseconds in log-linear buckets: values
// below 256 ns each have their own bucket; above, every power of two is cut
// into 128 equal buckets, so a bucket spans at most 1/128 of its lower bound
// and reporting its middle is off by at most 1/256 (0.4%) of the true value.
// That holds up to 2^40 ns (~18 minutes); larger values share the last bucket
// (the exact maximum is kept apart). Recording never allocates.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	sum    float64
	min    int64
	max    int64
}

const (
	histSubBits = 7                // 2^7 = 128 buckets per power of two
	histSub     = 1 << histSubBits // 128
	histLinear  = 2 * histSub      // values 0..255 are exact
	histMaxBits = 40               // largest value with its own bucket: 2^40-1 ns
	histBuckets = histLinear + (histMaxBits-histSubBits-1)*histSub
	histMaxVal  = 1<<histMaxBits - 1
)

func histIndex(v int64) int {
	if v < histLinear {
		return int(v)
	}
	if v > histMaxVal {
		v = histMaxVal
	}
	shift := bits.Len64(uint64(v)) - (histSubBits + 1) // v>>shift is in [128, 256)
	return histLinear + (shift-1)*histSub + int(v>>shift) - histSub
}

// histBounds returns the smallest and largest value of bucket i.
func histBounds(i int) (lo, hi int64) {
	if i < histLinear {
		return int64(i), int64(i)
	}
	k := i - histLinear
	shift := k/histSub + 1
	m := int64(k%histSub + histSub)
	return m << shift, (m+1)<<shift - 1
}

func (h *histogram) record(v int64) {
	if v < 0 {
		v = 0
	}
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.counts[histIndex(v)]++
	h.n++
	h.sum += float64(v)
}

func (h *histogram) reset() { *h = histogram{} }

func (h *histogram) mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// quantile returns the q-quantile (0 < q <= 1): the value of rank
// ceil(q*n) in sorted order, to within the bucket precision, clamped to
// the exact minimum and maximum.
func (h *histogram) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	if rank > h.n {
		rank = h.n
	}
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			lo, hi := histBounds(i)
			v := lo + (hi-lo)/2
			if v < h.min {
				v = h.min
			}
			if v > h.max {
				v = h.max
			}
			return v
		}
	}
	return h.max
}
