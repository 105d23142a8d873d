// Package jiffies maps the kernel's jiffies onto CLOCK_MONOTONIC, so that
// the probes can stamp allocations with bpf_jiffies64(), a load, instead of
// bpf_ktime_get_ns(), a read of the clock source that cost them more than
// the rest of the timestamping.
//
// The kernel advances jiffies on a grid of CLOCK_MONOTONIC: each update
// adds whole ticks of TICK_NSEC to the time of the last one
// (tick_do_update_jiffies64), counting from INITIAL_JIFFIES at boot. So a
// reading of both clocks and HZ place every tick. HZ is the value Kconfig
// offers that fits two readings: their distance in ticks, and where the
// first puts boot.
package jiffies

import (
	"fmt"
	"math"
)

// hzs are the values of CONFIG_HZ on x86-64 and arm64.
var hzs = []uint64{100, 250, 300, 1000}

// Reading is jiffies and CLOCK_MONOTONIC read at once, jiffies first.
type Reading struct {
	Jiffies, Ns uint64
}

// MinApart is how far apart two readings must be for their distance in
// ticks to tell HZ 250 from 300 (50 ticks a second apart), the two
// closest, with a tick of error at each end.
const MinApart = 60e6

// bootSlack is how far from CLOCK_MONOTONIC's zero jiffies may have
// started counting from INITIAL_JIFFIES. Where boot falls tells a wrong HZ
// too, except near five minutes of uptime, where jiffies reach 2^32 at any
// HZ (INITIAL_JIFFIES is 300 s of ticks before): the distance between the
// readings tells it there.
const bootSlack = 20e9

// Clock maps jiffies onto CLOCK_MONOTONIC.
type Clock struct {
	HZ     uint64
	tickNs uint64
	at     Reading
}

// Fit finds the HZ that both readings fit, the second taken at least
// MinApart after the first, and returns the mapping it gives.
func Fit(first, second Reading) (Clock, error) {
	apart := second.Ns - first.Ns
	if second.Ns < first.Ns || apart < MinApart {
		return Clock{}, fmt.Errorf("readings %d ns apart, where HZ needs %d", int64(apart), uint64(MinApart)) //nolint:gosec // G115: read signed, a second reading before the first shows as negative
	}
	var fits []Clock
	for _, hz := range hzs {
		c := Clock{HZ: hz, tickNs: (1e9 + hz/2) / hz, at: second}
		// Each reading falls within its tick: their distance in ticks is
		// the distance in time, give or take one.
		ticks := float64(second.Jiffies - first.Jiffies)
		if math.Abs(ticks-float64(apart)/float64(c.tickNs)) > 1.5 {
			continue
		}
		// Wrapping arithmetic: jiffies below INITIAL_JIFFIES put boot
		// after the reading, a miss like any other.
		bootNs := int64(first.Ns - (first.Jiffies-initial(hz))*c.tickNs) //nolint:gosec // G115: wrapping on purpose, as said above
		if math.Abs(float64(bootNs)) > bootSlack {
			continue
		}
		fits = append(fits, c)
	}
	if len(fits) != 1 {
		return Clock{}, fmt.Errorf("jiffies %d and %d at %d and %d ns of CLOCK_MONOTONIC fit %d of the HZ values %v",
			first.Jiffies, second.Jiffies, first.Ns, second.Ns, len(fits), hzs)
	}
	return fits[0], nil
}

// initial is INITIAL_JIFFIES on a 64-bit kernel: (unsigned long)(unsigned
// int)(-300*HZ), so that 32-bit jiffies wrap five minutes after boot.
func initial(hz uint64) uint64 {
	return 1<<32 - 300*hz
}

// End returns the latest CLOCK_MONOTONIC time at which tick j can end: a
// time stamped j is no later, so ages computed from it are never too long.
// The reading was taken within its tick, at or after the tick's start.
func (c Clock) End(j uint64) uint64 {
	return c.at.Ns + (j-c.at.Jiffies+1)*c.tickNs
}

// At returns the tick holding CLOCK_MONOTONIC time ns, as far as the
// reading places it: End(At(ns)) is at or after ns.
func (c Clock) At(ns uint64) uint64 {
	ticks := int64(ns-c.at.Ns) / int64(c.tickNs) //nolint:gosec // G115: the distance read signed, ns may be before the reading; a tick is under a second
	if ns < c.at.Ns && (c.at.Ns-ns)%c.tickNs != 0 {
		ticks-- // division rounds toward zero, the tick is below
	}
	return c.at.Jiffies + uint64(ticks) //nolint:gosec // G115: two's complement adds a negative distance too
}
