package kmem

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseAllocator(t *testing.T) {
	tests := []struct {
		name    string
		want    Allocator
		wantErr string
	}{
		{name: "slab", want: Slab},
		{name: "kmalloc", want: Kmalloc},
		{name: "page", want: Page},
		{name: "percpu", want: Percpu},
		{name: "", wantErr: `unknown allocator "" (known: slab, kmalloc, page, percpu)`},
		{name: "Slab", wantErr: `unknown allocator "Slab" (known: slab, kmalloc, page, percpu)`},
		{name: "slub", wantErr: `unknown allocator "slub" (known: slab, kmalloc, page, percpu)`},
		{name: "pages", wantErr: `unknown allocator "pages" (known: slab, kmalloc, page, percpu)`},
		{name: "vmalloc", wantErr: `unknown allocator "vmalloc" (known: slab, kmalloc, page, percpu)`},
		{name: " kmalloc", wantErr: `unknown allocator " kmalloc" (known: slab, kmalloc, page, percpu)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAllocator(tt.name)
			if tt.wantErr != "" {
				assert.EqualError(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestAllocatorStringRoundTrip(t *testing.T) {
	for _, a := range Allocators {
		got, err := ParseAllocator(a.String())
		require.NoError(t, err)
		assert.Equal(t, a, got)
	}
	// Values the BPF programs do not define still print, never as a known name.
	assert.Equal(t, "allocator(7)", Allocator(7).String())
}

func TestParseMode(t *testing.T) {
	tests := []struct {
		name    string
		want    Mode
		wantErr string
	}{
		{name: "auto", want: ModeAuto},
		{name: "tp_btf", want: ModeTPBTF},
		{name: "raw_tp", want: ModeRawTP},
		{name: "tracepoint", want: ModeTracepoint},
		{name: "", wantErr: `unknown attach mode "" (known: auto, tp_btf, raw_tp, tracepoint, kprobe)`},
		{name: "kprobe", want: ModeKprobe},
		{name: "kretprobe", wantErr: `unknown attach mode "kretprobe" (known: auto, tp_btf, raw_tp, tracepoint, kprobe)`},
		{name: "fentry", wantErr: `unknown attach mode "fentry" (known: auto, tp_btf, raw_tp, tracepoint, kprobe)`},
		{name: "AUTO", wantErr: `unknown attach mode "AUTO" (known: auto, tp_btf, raw_tp, tracepoint, kprobe)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMode(tt.name)
			if tt.wantErr != "" {
				assert.EqualError(t, err, tt.wantErr)
				assert.Empty(t, got)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}
