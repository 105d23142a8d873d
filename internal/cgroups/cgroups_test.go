package cgroups

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Each hierarchy counts once: cgroup v1 mounts one per controller (or a
// few together), cgroup v2 has them all in hierarchy 0. A disabled
// controller's line counts for nothing.
func TestCount(t *testing.T) {
	v1 := `#subsys_name	hierarchy	num_cgroups	enabled
cpuset	3	1	1
cpu	1	5	1
cpuacct	1	5	1
memory	4	17	1
pids	8	1	1
rdma	0	1	0
`
	n, err := Count(strings.NewReader(v1))
	require.NoError(t, err)
	assert.Equal(t, int64(1+5+17+1), n)

	v2 := `#subsys_name	hierarchy	num_cgroups	enabled
cpu	0	96	1
memory	0	96	1
pids	0	96	1
`
	n, err = Count(strings.NewReader(v2))
	require.NoError(t, err)
	assert.Equal(t, int64(96), n)

	_, err = Count(strings.NewReader("memory 4 seventeen 1\n"))
	assert.ErrorContains(t, err, "num_cgroups of memory")
	_, err = Count(strings.NewReader("memory 4\n"))
	assert.ErrorContains(t, err, "not subsys_name")
}

func TestCountThisMachine(t *testing.T) {
	f, err := os.Open("/proc/cgroups")
	if err != nil {
		t.Skip("no /proc/cgroups:", err)
	}
	defer f.Close()
	n, err := Count(f)
	require.NoError(t, err)
	assert.Positive(t, n)
}

func TestMade(t *testing.T) {
	assert.True(t, Made([]string{"mem_cgroup_css_alloc"}))
	assert.True(t, Made([]string{"__kernfs_new_node", "kernfs_new_node", "cgroup_mkdir", "kernfs_iop_mkdir"}))
	assert.True(t, Made([]string{"memcg_list_lru_alloc", "__memcg_slab_post_alloc_hook"}))
	assert.False(t, Made([]string{"__kernfs_new_node", "sysfs_create_file"}))
	assert.False(t, Made([]string{"alloc_pipe_info"}))
}
