package slabmerge

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmemleak/kmemleakreceiver/internal/slabinfo"
)

// fakeSysfs lays out testdata/sysfs-6.18.txt, this machine's
// /sys/kernel/slab (Linux 6.18), under a temporary directory: each
// directory with its aliases file, each name a symlink. Built at test time,
// for the module's files may not have a colon in their names.
func fakeSysfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(filepath.Join("testdata", "sysfs-6.18.txt"))
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			continue // the comment
		}
		switch fields[0] {
		case "dir":
			require.NoError(t, os.Mkdir(filepath.Join(dir, fields[1]), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, fields[1], "aliases"), []byte(fields[2]+"\n"), 0o444))
		case "link":
			require.NoError(t, os.Symlink(fields[2], filepath.Join(dir, fields[1])))
		}
	}
	require.NoError(t, sc.Err())
	return dir
}

func TestOf(t *testing.T) {
	n := New(fakeSysfs(t))
	epi := []string{"eventpoll_epi", "fib6_node", "tcp_bind2_bucket", "tcp_bind_bucket"}
	assert.Equal(t, epi, n.Of("eventpoll_epi"), "the name the kernel keeps, and the three merged into it")
	assert.Equal(t, epi, n.Of("tcp_bind2_bucket"), "any of them")
	assert.Equal(t, []string{"anon_vma_chain", "eventpoll_pwq", "fs_cache"}, n.Of("anon_vma_chain"))
	assert.Equal(t, []string{"Acpi-Parse", "btrfs_inode_defrag", "damon_region", "fanotify_mnt_event", "file_lock_ctx",
		"ftrace_event_field", "xfs_extfree_intent"}, n.Of("ftrace_event_field"))
	assert.Nil(t, n.Of("kmalloc-64"), "unmergeable: a directory of its own")
	assert.Nil(t, n.Of("blkdev_ioc"), "mergeable, merged with nothing")
	assert.Nil(t, n.Of("slab-192"), "the probes' name of a size: no such cache")
	assert.Nil(t, New(filepath.Join(t.TempDir(), "none")).Of("eventpoll_epi"), "no sysfs")
}

// The directory is listed again only when the count of aliases changes.
func TestOfListsAgainWhenAliasesChange(t *testing.T) {
	dir := fakeSysfs(t)
	n := New(dir)
	require.Len(t, n.Of("eventpoll_epi"), 4)
	require.NoError(t, os.Remove(filepath.Join(dir, "fib6_node")))
	assert.Len(t, n.Of("eventpoll_epi"), 4, "the same count of aliases: not listed again")
	require.NoError(t, os.WriteFile(filepath.Join(dir, ":A-0000128", "aliases"), []byte("2\n"), 0o444))
	assert.Equal(t, []string{"eventpoll_epi", "tcp_bind2_bucket", "tcp_bind_bucket"}, n.Of("eventpoll_epi"))
}

// Why the truth check compares like with like for merged caches: slabinfo
// lists a merged cache once, under the name the kernel keeps for it, which
// is kmem_cache->name, the name the probes read; its count is all the
// merged caches' objects. On this machine every one of the 79 sets of
// names sharing a cache has exactly one name in slabinfo, and no kmalloc
// cache is merged with anything.
func TestSlabinfoListsEachMergedCacheOnce(t *testing.T) {
	dir := fakeSysfs(t)
	counts, err := slabinfo.Read(filepath.Join("testdata", "slabinfo-6.18"))
	require.NoError(t, err)
	n := New(dir)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	sets := map[string]bool{}
	for _, e := range entries {
		names := n.Of(e.Name())
		if names == nil {
			continue
		}
		var listed []string
		for _, name := range names {
			if _, ok := counts[name]; ok {
				listed = append(listed, name)
			}
			assert.False(t, strings.HasPrefix(name, "kmalloc-"), "%s merged with %v", name, names)
		}
		assert.Len(t, listed, 1, "%v in slabinfo as %v", names, listed)
		sets[strings.Join(names, " ")] = true
	}
	assert.Contains(t, sets, "eventpoll_epi fib6_node tcp_bind2_bucket tcp_bind_bucket")
	assert.Len(t, sets, 39)
}
