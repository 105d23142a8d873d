package slabinfo

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const header = "slabinfo - version: 2.1\n" +
	"# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n"

// line formats one cache the way the kernel does (only the first two fields
// and the object size, 256, matter to Parse).
func line(name, active string) string {
	return name + " " + active + " 848 256 16 1 : tunables 0 0 0 : slabdata 53 53 0\n"
}

// named leaves out of counts the sums by object size (slab-N), which
// TestParseSumsEachSizeUnderSlabN checks.
func named(counts map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for name, n := range counts {
		if !strings.HasPrefix(name, "slab-") {
			out[name] = n
		}
	}
	return out
}

func TestReadFixture(t *testing.T) {
	got, err := Read(filepath.Join("testdata", "slabinfo"))
	require.NoError(t, err)

	// The active_objs column, not num_objs (the second number).
	assert.Equal(t, int64(827), got["maple_node"])
	assert.Equal(t, int64(139355), got["dentry"])
	assert.Equal(t, int64(7287), got["kmalloc-192"])
	assert.Equal(t, int64(642), got["filp"])
	assert.Equal(t, int64(133), got["kmalloc-cg-1k"])
	assert.Equal(t, int64(36), got["kmalloc-8k"])
	assert.Equal(t, int64(12), got["bio-312"])

	// A cache with no object is present with a count of 0, not missing:
	// the checker skips the caches the kernel does not know.
	n, ok := got["btrfs_inode"]
	assert.True(t, ok, "btrfs_inode is in the fixture with 0 objects")
	assert.Zero(t, n)

	// Every cache line, and nothing from the header or the comment.
	assert.Len(t, named(got), 16)
	assert.NotContains(t, got, "slabinfo")
	assert.NotContains(t, got, "#")
	assert.NotContains(t, got, "# name")
}

func TestParseMatchesRead(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "slabinfo"))
	require.NoError(t, err)
	fromParse, err := Parse(bytes.NewReader(raw))
	require.NoError(t, err)
	fromRead, err := Read(filepath.Join("testdata", "slabinfo"))
	require.NoError(t, err)
	assert.Equal(t, fromRead, fromParse)
}

func TestReadMissingFile(t *testing.T) {
	got, err := Read(filepath.Join(t.TempDir(), "no-such-slabinfo"))
	require.Error(t, err)
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.Nil(t, got)
}

func TestParseHeader(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		wantErr string // empty: accepted
	}{
		{name: "2.1", input: "slabinfo - version: 2.1\n" + line("dentry", "5")},
		{name: "2.0", input: "slabinfo - version: 2.0\n" + line("dentry", "5")},
		{name: "1.1", input: "slabinfo - version: 1.1\n" + line("dentry", "5"), wantErr: `unknown slabinfo format "slabinfo - version: 1.1"`},
		{name: "3.0", input: "slabinfo - version: 3.0\n" + line("dentry", "5"), wantErr: `unknown slabinfo format "slabinfo - version: 3.0"`},
		{name: "20.0 is not 2.x", input: "slabinfo - version: 20.0\n" + line("dentry", "5"), wantErr: `unknown slabinfo format "slabinfo - version: 20.0"`},
		{name: "no header, a cache line first", input: line("dentry", "5"), wantErr: "unknown slabinfo format"},
		{name: "blank first line", input: "\nslabinfo - version: 2.1\n" + line("dentry", "5"), wantErr: `unknown slabinfo format ""`},
		{name: "not slabinfo at all", input: "MemTotal: 16318480 kB\n", wantErr: `unknown slabinfo format "MemTotal: 16318480 kB"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tt.input))
			if tt.wantErr == "" {
				require.NoError(t, err)
				assert.Equal(t, map[string]int64{"dentry": 5}, named(got))
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
			assert.Nil(t, got)
		})
	}
}

func TestParseEmpty(t *testing.T) {
	got, err := Parse(strings.NewReader(""))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "empty")
	assert.Nil(t, got)
}

func TestParseHeaderOnly(t *testing.T) {
	// A kernel with no slab cache is not a thing, but the file is well formed.
	got, err := Parse(strings.NewReader(header))
	require.NoError(t, err)
	assert.Empty(t, got)
}

func TestParseMalformedLines(t *testing.T) {
	tests := []struct {
		name    string
		body    string // after the two header lines (lines 1 and 2)
		wantErr string
	}{
		{name: "name only", body: "dentry\n", wantErr: `slabinfo line 3: "dentry" has no object count`},
		{name: "name only after good lines", body: line("dentry", "5") + line("filp", "6") + "maple_node\n", wantErr: "slabinfo line 5:"},
		{name: "whitespace-only line", body: line("dentry", "5") + "   \t \n", wantErr: "slabinfo line 4:"},
		{name: "non-numeric count", body: line("dentry", "many"), wantErr: `slabinfo line 3: bad active object count "many"`},
		{name: "float count", body: line("dentry", "1.5"), wantErr: `slabinfo line 3: bad active object count "1.5"`},
		{name: "hex count", body: line("dentry", "0x10"), wantErr: `slabinfo line 3: bad active object count "0x10"`},
		{name: "negative count", body: line("dentry", "5") + line("maple_node", "-1"), wantErr: `slabinfo line 4: bad active object count "-1"`},
		{name: "count overflows int64", body: line("dentry", "9223372036854775808"), wantErr: `slabinfo line 3: bad active object count "9223372036854775808"`},
		{name: "non-numeric size", body: "dentry 5 848 big 16 1\n", wantErr: `slabinfo line 3: bad object size "big"`},
		{name: "negative size", body: "dentry 5 848 -256 16 1\n", wantErr: `slabinfo line 3: bad object size "-256"`},
		// Blank and comment lines are skipped but still counted.
		{name: "line numbers count skipped lines", body: "\n# comment\n" + line("dentry", "5") + "\n" + line("filp", "x"), wantErr: `slabinfo line 7: bad active object count "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(header + tt.body))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
			assert.Nil(t, got)
		})
	}
}

func TestParseSkipsBlankAndCommentLines(t *testing.T) {
	input := "slabinfo - version: 2.1\n" +
		"\n" +
		"# a comment\n" +
		line("dentry", "5") +
		"\n" +
		"#maple_node 99\n" +
		line("filp", "7")
	got, err := Parse(strings.NewReader(input))
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"dentry": 5, "filp": 7}, named(got))
}

func TestParseWithoutTrailingNewline(t *testing.T) {
	got, err := Parse(strings.NewReader(header + strings.TrimSuffix(line("dentry", "5"), "\n")))
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"dentry": 5, "slab-256": 5}, got)
}

func TestParseTwoFieldLine(t *testing.T) {
	// Only the name and the active count are needed; without the size the
	// cache counts under no slab-N.
	got, err := Parse(strings.NewReader(header + "dentry\t42\n"))
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"dentry": 42}, got)
}

// The classic tracepoint of 6.1 and 6.12 names no cache: the probes call
// each slab cache after its object size, and the truth check compares
// slab-N with every cache of that size (on the fixture, 192: filp, dentry
// and kmalloc-192), where before it found no count at all and bounded
// nothing.
func TestParseSumsEachSizeUnderSlabN(t *testing.T) {
	got, err := Read(filepath.Join("testdata", "slabinfo"))
	require.NoError(t, err)
	assert.Equal(t, int64(642+139355+7287), got["slab-192"])
	assert.Equal(t, int64(827), got["slab-256"])
	assert.Equal(t, int64(12), got["slab-320"])
	assert.Equal(t, int64(0), got["slab-312"], "an empty cache of its own size")
	sized := map[string]int64{}
	for name, n := range got {
		if strings.HasPrefix(name, "slab-") {
			sized[name] = n
		}
	}
	assert.Len(t, sized, 14, "one per object size of the fixture")
	assert.Equal(t, "slab-192", SizedName(192))
}

func TestParseFoldsRandomKmalloc(t *testing.T) {
	input := header +
		line("kmalloc-64", "100") +
		line("kmalloc-rnd-01-64", "20") +
		line("kmalloc-rnd-15-64", "3") +
		line("kmalloc-1k", "7") +
		line("kmalloc-rnd-08-1k", "11") +
		line("kmalloc-rnd-02-8k", "4") + // no kmalloc-8k line: the copies alone
		line("kmalloc-cg-64", "50") + // another family: not folded into kmalloc-64
		line("kmalloc-rnd-", "9") + // nothing after the prefix: kept as is
		line("kmalloc-rnd-07", "6") + // no size: kept as is
		line("dentry", "5")
	got, err := Parse(strings.NewReader(input))
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{
		"kmalloc-64":     123,
		"kmalloc-1k":     18,
		"kmalloc-8k":     4,
		"kmalloc-cg-64":  50,
		"kmalloc-rnd-":   9,
		"kmalloc-rnd-07": 6,
		"dentry":         5,
	}, named(got))
}

func TestParseFoldsRandomKmallocInAnyOrder(t *testing.T) {
	// The copies may come before the cache they fold into.
	input := header +
		line("kmalloc-rnd-15-192", "3") +
		line("kmalloc-192", "100") +
		line("kmalloc-rnd-01-192", "20")
	got, err := Parse(strings.NewReader(input))
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"kmalloc-192": 123}, named(got))
}

func TestFoldRandomKmalloc(t *testing.T) {
	tests := []struct{ in, want string }{
		{"kmalloc-rnd-01-64", "kmalloc-64"},
		{"kmalloc-rnd-15-64", "kmalloc-64"},
		{"kmalloc-rnd-07-1k", "kmalloc-1k"},
		{"kmalloc-rnd-15-8k", "kmalloc-8k"},
		{"kmalloc-rnd-", "kmalloc-rnd-"},
		{"kmalloc-rnd-07", "kmalloc-rnd-07"},
		{"kmalloc-64", "kmalloc-64"},
		{"kmalloc-cg-64", "kmalloc-cg-64"},
		{"dma-kmalloc-rnd-01-64", "dma-kmalloc-rnd-01-64"},
		{"maple_node", "maple_node"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			assert.Equal(t, tt.want, FoldRandomKmalloc(tt.in))
		})
	}
}

func TestParseReaderError(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		r    io.Reader
	}{
		{name: "at once", r: iotest.ErrReader(boom)},
		{name: "after the header", r: io.MultiReader(strings.NewReader(header), iotest.ErrReader(boom))},
		// A partial table would undercount the caches not read yet, and a
		// kmalloc-N whose kmalloc-rnd copies come later: all or nothing.
		{name: "after some lines", r: io.MultiReader(strings.NewReader(header+line("dentry", "5")+line("kmalloc-64", "100")), iotest.ErrReader(boom))},
		{name: "mid-line", r: io.MultiReader(strings.NewReader(header+line("dentry", "5")+"filp 6"), iotest.ErrReader(boom))},
		// The error comes with the data of the last read.
		{name: "with the last lines", r: iotest.DataErrReader(io.MultiReader(strings.NewReader(header+line("dentry", "5")), iotest.ErrReader(boom)))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.r)
			require.ErrorIs(t, err, boom)
			assert.Nil(t, got, "no partial table")
		})
	}
}

func TestReadUnreadableFile(t *testing.T) {
	// A directory opens but fails on read: Read returns the error, no map.
	got, err := Read(t.TempDir())
	require.Error(t, err)
	assert.Nil(t, got)
}

func TestParseLineTooLong(t *testing.T) {
	// bufio.Scanner gives up on a line over 64 KiB: an error, not a
	// silently truncated count.
	input := header + line("dentry", "5") + "x" + strings.Repeat(" ", 70<<10) + "1\n"
	got, err := Parse(strings.NewReader(input))
	require.Error(t, err)
	assert.Nil(t, got, "no partial table")
}

func FuzzParse(f *testing.F) {
	fixture, err := os.ReadFile(filepath.Join("testdata", "slabinfo"))
	require.NoError(f, err)
	f.Add(fixture)
	f.Add([]byte(""))
	f.Add([]byte("\n"))
	f.Add([]byte(header))
	f.Add([]byte("slabinfo - version: 2.1"))
	f.Add([]byte("slabinfo - version: 1.1\n" + line("dentry", "5")))
	f.Add([]byte(header + "dentry\n"))
	f.Add([]byte(header + line("dentry", "-1")))
	f.Add([]byte(header + line("dentry", "9223372036854775807")))
	f.Add([]byte(header + line("kmalloc-64", "1") + line("kmalloc-rnd-01-64", "2") + line("kmalloc-rnd-", "3") + line("kmalloc-rnd-02-", "4")))
	f.Add([]byte("slabinfo - version: 2.1\r\n" + "dentry 5 6\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Parse(bytes.NewReader(data))
		if err != nil {
			require.Nil(t, got, "a table with an error")
			return
		}
		require.True(t, bytes.HasPrefix(data, []byte("slabinfo - version: 2.")), "accepted without a 2.x header")
		for name := range got {
			require.NotEmpty(t, name)
			require.Equal(t, -1, strings.IndexFunc(name, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' }), "name %q has a separator", name)
		}
	})
}
