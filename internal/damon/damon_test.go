package damon

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// kdamond writes a kdamond's sysfs files under dir: its state, and its
// contexts' max_nr_regions and number of targets.
func kdamond(t *testing.T, dir, id, state string, contexts ...[2]string) {
	t.Helper()
	write := func(path, value string) {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(value+"\n"), 0o600))
	}
	write(filepath.Join(dir, id, "state"), state)
	for i, c := range contexts {
		ctx := filepath.Join(dir, id, "contexts", string(rune('0'+i)))
		write(filepath.Join(ctx, "monitoring_attrs", "nr_regions", "max"), c[0])
		write(filepath.Join(ctx, "targets", "nr_targets"), c[1])
	}
}

func TestBound(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nr_kdamonds"), []byte("3\n"), 0o600))
	kdamond(t, dir, "0", "on", [2]string{"8192", "1"}) // this machine's: paddr
	kdamond(t, dir, "1", "on", [2]string{"1000", "3"}, [2]string{"500", "2"})
	kdamond(t, dir, "2", "off", [2]string{"1000", "1"})
	n, err := Bound(dir)
	require.NoError(t, err)
	assert.Equal(t, int64(8192+3000+1000), n)

	n, err = Bound(filepath.Join(dir, "none"))
	require.NoError(t, err)
	assert.Zero(t, n, "no DAMON sysfs interface")

	kdamond(t, dir, "3", "on", [2]string{"many", "1"})
	_, err = Bound(dir)
	assert.ErrorContains(t, err, "nr_regions/max")
}

func TestMade(t *testing.T) {
	assert.True(t, Made("damon_split_region_at"))
	assert.True(t, Made("damon_new_region"))
	assert.False(t, Made("kdamond_fn"), "a caller, not where DAMON allocates")
	assert.False(t, Made("__alloc_skb"))
}
