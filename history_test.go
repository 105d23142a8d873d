//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/extension/xextension/storage"
	"go.uber.org/zap/zaptest/observer"

	"github.com/kmemleak/kmemleakreceiver/internal/metadata"
	"github.com/kmemleak/kmemleakreceiver/internal/scan"
)

// storage: names an extension the collector runs, and a storage one.
func TestStorageClientNamesWhatIsWrong(t *testing.T) {
	id, self := component.MustNewID("file_storage"), component.NewID(metadata.Type)
	_, err := storageClient(context.Background(), host{}, id, self)
	require.EqualError(t, err, `storage: no extension "file_storage": list it under extensions: and in service.extensions`)
	_, err = storageClient(context.Background(), host{id: notStorage{}}, id, self)
	require.EqualError(t, err, `storage: extension "file_storage" is not a storage extension (file_storage is one)`)
	client, err := storageClient(context.Background(), host{id: memStorage{memClient{}}}, id, self)
	require.NoError(t, err)
	assert.NotNil(t, client)
}

// What one receiver saves, the next restores; what it did not write, or
// wrote for tables the next one does not have, it ignores without failing.
func TestVerdictHistoriesOutliveTheReceiver(t *testing.T) {
	store := memClient{}
	first, _ := receiverWithStorage(t, store)
	first.saveVerdicts(context.Background())
	require.NotEmpty(t, store[historyKey])

	next, logs := receiverWithStorage(t, store)
	next.restoreVerdicts(context.Background(), true)
	assert.Equal(t, 1, logs.FilterMessage("Restored the verdict histories of the collector before").Len(), "%v", logs.All())

	clean, logs := receiverWithStorage(t, store)
	clean.restoreVerdicts(context.Background(), false)
	assert.Equal(t, 1, logs.FilterMessage("Not restoring the verdict histories: the live tables started empty").Len(), "%v", logs.All())

	// Stopped for good, the receiver leaves no history behind.
	clean.cfg.Pinning.OnShutdown = releasePins
	clean.keepVerdicts(context.Background())
	assert.NotContains(t, store, historyKey)

	store[historyKey] = []byte("a file of something else")
	foreign, logs := receiverWithStorage(t, store)
	foreign.restoreVerdicts(context.Background(), true)
	assert.Equal(t, 1, logs.FilterMessageSnippet("Ignoring the stored verdict histories").Len(), "%v", logs.All())
}

func receiverWithStorage(t *testing.T, store memClient) (*kmemleakReceiver, *observer.ObservedLogs) {
	t.Helper()
	set, logs := settingsWithLogs(component.NewID(metadata.Type))
	cfg := createDefaultConfig()
	r, err := newReceiver(cfg, set, func() {})
	require.NoError(t, err)
	r.storage = store
	r.scanner = scan.New(newMachine(), cfg.scanOptions(true))
	return r, logs
}

// host is a host that runs the given extensions.
type host map[component.ID]component.Component

func (h host) GetExtensions() map[component.ID]component.Component { return h }

type notStorage struct{ component.StartFunc }

func (notStorage) Shutdown(context.Context) error { return nil }

// memStorage is a storage extension that keeps its data in memory, in
// its one client.
type memStorage struct {
	memClient
}

func (memStorage) Start(context.Context, component.Host) error { return nil }
func (memStorage) Shutdown(context.Context) error              { return nil }

func (s memStorage) GetClient(context.Context, component.Kind, component.ID, string) (storage.Client, error) {
	return s.memClient, nil
}

type memClient map[string][]byte

func (m memClient) Get(_ context.Context, key string) ([]byte, error) { return m[key], nil }

func (m memClient) Set(_ context.Context, key string, value []byte) error {
	m[key] = value
	return nil
}

func (m memClient) Delete(_ context.Context, key string) error {
	delete(m, key)
	return nil
}

func (memClient) Batch(context.Context, ...*storage.Operation) error { return nil }
func (memClient) Close(context.Context) error                        { return nil }
