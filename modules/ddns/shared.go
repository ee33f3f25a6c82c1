package ddns

import (
	"context"
	"encoding/json"
	"net/netip"
	"path"
	"strings"
	"time"
)

// Several Caddy instances may share one storage (Caddy's `storage`: a
// shared file system, Redis, Consul, S3…) and one ddns config, on purpose:
// they then share the work. Each record has a lock and a note of its last
// write in the storage; an instance takes the lock before writing, and
// skips the write when the note says another instance already set the
// value after this instance last read DNS. So one address change is one
// update, whichever instance sees it first; a record changed behind
// Hearth's back (seen by a read-back) is still repaired.

// writeNote is what the storage keeps of a record's last write.
type writeNote struct {
	Value     string    `json:"value"`
	WrittenAt time.Time `json:"written_at"`
}

// recordKey is the storage key of a record's lock and note.
func recordKey(zone, name, version string) string {
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r == '/' || r == '\\' || r < 0x20 {
				return '_'
			}
			return r
		}, strings.ToLower(s))
	}
	return path.Join("hearth", "ddns", "records", clean(strings.TrimSuffix(zone, ".")), recordType(version)+"_"+clean(relativeName(name, zone)))
}

// sharedWrite takes the record's lock in the storage and reports whether
// another instance already wrote ip there after readAt (zero: this check
// did not read DNS). done releases the lock.
func (a *App) sharedWrite(ctx context.Context, zone, name, version string, ip netip.Addr, readAt time.Time) (written bool, done func(), err error) {
	done = func() {}
	if a.storage == nil {
		return false, done, nil
	}
	key := recordKey(zone, name, version)
	if err := a.storage.Lock(ctx, key+".lock"); err != nil {
		return false, done, err
	}
	done = func() { _ = a.storage.Unlock(context.WithoutCancel(ctx), key+".lock") }
	data, err := a.storage.Load(ctx, key+".json")
	if err != nil {
		return false, done, nil // none yet
	}
	var note writeNote
	if json.Unmarshal(data, &note) != nil {
		return false, done, nil
	}
	return note.Value == ip.String() && (readAt.IsZero() || note.WrittenAt.After(readAt)), done, nil
}

// storeWrite notes a write this instance made.
func (a *App) storeWrite(ctx context.Context, zone, name, version string, ip netip.Addr) {
	if a.storage == nil {
		return
	}
	data, _ := json.Marshal(writeNote{Value: ip.String(), WrittenAt: time.Now()})
	_ = a.storage.Store(ctx, recordKey(zone, name, version)+".json", data)
}
