package jiffies

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// kernel simulates a kernel's two clocks: jiffies start at INITIAL_JIFFIES
// when CLOCK_MONOTONIC reads bootNs, and advance a tick of TICK_NSEC at a
// time.
type kernel struct {
	hz, bootNs uint64
}

func (k kernel) tickNs() uint64 { return (1e9 + k.hz/2) / k.hz }

// read reads both clocks at CLOCK_MONOTONIC time ns.
func (k kernel) read(ns uint64) Reading {
	return Reading{Jiffies: initial(k.hz) + (ns-k.bootNs)/k.tickNs(), Ns: ns}
}

// Uptimes around five minutes are where jiffies alone say nothing of HZ:
// they reach 2^32 then at any HZ.
var uptimes = []uint64{5e8, 240e9, 300e9, 301e9, 3600e9, 100 * 86400e9}

func TestFitFindsHZ(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, hz := range hzs {
		for _, uptimeNs := range uptimes {
			k := kernel{hz: hz, bootNs: 2e8}
			first := k.bootNs + uptimeNs + rng.Uint64N(1e7)
			c, err := Fit(k.read(first), k.read(first+MinApart+rng.Uint64N(1e7)))
			require.NoError(t, err, "HZ %d, up %d ns", hz, uptimeNs)
			assert.Equal(t, hz, c.HZ, "up %d ns", uptimeNs)
		}
	}
}

// A kernel whose HZ is none Kconfig offers on x86-64 and arm64 (1024 is
// one of alpha's) fits none away from five minutes of uptime: the probes
// then keep nanoseconds.
func TestFitRefusesWhatFitsNoHZ(t *testing.T) {
	k := kernel{hz: 1024, bootNs: 2e8}
	_, err := Fit(k.read(3600e9), k.read(3600e9+MinApart))
	require.ErrorContains(t, err, "fit 0 of the HZ values")

	_, err = Fit(Reading{Jiffies: 12345, Ns: 3600e9}, Reading{Jiffies: 12360, Ns: 3600e9 + MinApart})
	require.ErrorContains(t, err, "fit 0 of the HZ values")

	k = kernel{hz: 250, bootNs: 2e8}
	_, err = Fit(k.read(3600e9), k.read(3600e9+MinApart/2))
	require.ErrorContains(t, err, "apart, where HZ needs")
	_, err = Fit(k.read(3600e9), k.read(3500e9))
	require.ErrorContains(t, err, "apart, where HZ needs")
}

// Every time stamped with a tick's jiffies is at or before End of it, and
// less than two ticks before: ages are never too long, and short by at
// most two ticks. At, with which the bench stamps synthetic objects, is a
// tick End maps back to within the same bounds.
func TestEndBoundsTheTick(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, hz := range hzs {
		k := kernel{hz: hz, bootNs: 123456789}
		readNs := k.bootNs + 86400e9 + rng.Uint64N(1e9)
		c, err := Fit(k.read(readNs), k.read(readNs+MinApart))
		require.NoError(t, err)
		for range 10000 {
			ns := k.bootNs + rng.Uint64N(7*86400e9) // before the reading and after
			for what, j := range map[string]uint64{"stamped": k.read(ns).Jiffies, "At": c.At(ns)} {
				end := c.End(j)
				require.GreaterOrEqual(t, end, ns, "HZ %d, %s: an allocation at %d ns ends its tick before it happened", hz, what, ns)
				require.Less(t, end-ns, 2*k.tickNs(), "HZ %d, %s: an allocation at %d ns", hz, what, ns)
			}
		}
	}
}
