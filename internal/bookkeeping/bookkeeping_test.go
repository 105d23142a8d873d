package bookkeeping

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestOf(t *testing.T) {
	assert.Equal(t, "SLUB sheaves", Of("alloc_empty_sheaf"))
	assert.Equal(t, "per-slab extension vectors", Of("alloc_slab_obj_exts"))
	assert.Equal(t, "per-CPU caches of freed bios, up to 256 a CPU", Of("bio_alloc_bioset"))
	assert.Empty(t, Of("alloc_pipe_info"))
}
