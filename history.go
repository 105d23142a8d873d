//go:build linux && (amd64 || arm64)

package kmemleakreceiver

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/extension/xextension/storage"
	"go.uber.org/zap"
)

// historyKey is the verdict histories' key in the receiver's storage.
const historyKey = "verdicts"

// saveEvery is how often the scan loop saves the verdict histories: a
// collector killed loses at most this much of them. Shutdown saves too.
const saveEvery = time.Minute

// storageClient is the receiver's client of the storage extension id.
func storageClient(ctx context.Context, host component.Host, id, receiverID component.ID) (storage.Client, error) {
	ext, ok := host.GetExtensions()[id]
	if !ok {
		return nil, fmt.Errorf("storage: no extension %q: list it under extensions: and in service.extensions", id)
	}
	se, ok := ext.(storage.Extension)
	if !ok {
		return nil, fmt.Errorf("storage: extension %q is not a storage extension (file_storage is one)", id)
	}
	client, err := se.GetClient(ctx, component.KindReceiver, receiverID, "")
	if err != nil {
		return nil, fmt.Errorf("storage: getting a client of %q: %w", id, err)
	}
	return client, nil
}

// restoreVerdicts takes up the verdict histories the collector before
// saved, when the tracker adopted its tables: histories of counts that
// included objects the empty tables lack would fall, not tell. Whatever
// cannot be restored is ignored with a WARN: the histories start again.
func (r *kmemleakReceiver) restoreVerdicts(ctx context.Context, adopted bool) {
	log := r.set.Logger
	if !adopted {
		log.Info("Not restoring the verdict histories: the live tables started empty")
		return
	}
	data, err := r.storage.Get(ctx, historyKey)
	if err != nil {
		log.Warn("Cannot read the stored verdict histories: every call site's history starts again", zap.Error(err))
		return
	}
	if data == nil {
		log.Info("No stored verdict histories to restore")
		return
	}
	n, err := r.scanner.RestoreVerdicts(data)
	if err != nil {
		log.Warn("Ignoring the stored verdict histories: every call site's history starts again", zap.Error(err))
		return
	}
	log.Info("Restored the verdict histories of the collector before", zap.Int("call_sites", n))
}

// keepVerdicts saves the verdict histories at Shutdown for the collector
// that follows, or, stopped for good (pinning.on_shutdown: release),
// deletes them with the tables they describe.
func (r *kmemleakReceiver) keepVerdicts(ctx context.Context) {
	if r.cfg.Pinning.OnShutdown != releasePins {
		r.saveVerdicts(ctx)
		return
	}
	if err := r.storage.Delete(ctx, historyKey); err != nil {
		r.set.Logger.Warn("Deleting the verdict histories failed", zap.Error(err))
	}
}

// saveVerdicts writes the verdict histories into the storage. A failure
// costs the next collector the histories, never this one anything: it is
// logged as the consumers' are.
func (r *kmemleakReceiver) saveVerdicts(ctx context.Context) {
	r.lastSave = time.Now()
	data, err := r.scanner.SaveVerdicts()
	if err == nil {
		err = r.storage.Set(ctx, historyKey, data)
	}
	if err != nil {
		r.errors.log(r.set.Logger, "Saving the verdict histories failed", err)
	}
}
