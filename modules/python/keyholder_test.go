package python

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hearth-dev/hearth/modules/python/engine"
)

// TestStoredKeyGoesOnlyToItsHolder: an app's stored secret key goes to
// Caddy's app and, from the commands beside a config, only to code
// running as the account Caddy runs the app as (or that a command made
// it for, until Caddy starts the app), to root, or to the command's own
// account; check gives other code a throwaway key, manage and exec
// refuse. A key a command made for another account is replaced before
// Caddy first hands it on. The same holds in the config's own storage.
func TestStoredKeyGoesOnlyToItsHolder(t *testing.T) {
	const (
		appUID   = 61001 // the account Caddy runs the app as
		otherUID = 61002 // another app's account, which can edit the config
		oldKey   = "key-of-an-earlier-version-0123456789-0123456789"
	)
	type step struct {
		use    keyUse
		uid    uint32 // the account the app's code runs as
		same   int    // the key is that of step #same (1-based); 0: a new one
		err    string // the step is refused with this
		old    bool   // the key is the one an earlier version stored
		warned bool   // Caddy logs that it replaced the key
		holder string // the record after the step ("": unchanged or none)
	}
	app, command, check := keyForApp, keyForCommand, keyForCheck
	for _, tc := range []struct {
		name    string
		storage bool // the config's storage, not the data directory
		setup   func(t *testing.T, secrets string)
		steps   []step
	}{
		{name: "Caddy records its app's account; commands hand the key to that account alone", steps: []step{
			{use: app, uid: appUID, holder: "uid 61001 served\n"},
			{use: command, uid: appUID, same: 1},
			{use: command, uid: otherUID, err: "secret key is for 61001, the account Caddy runs the app as; this command would run the app's code as 61002"},
			{use: check, uid: otherUID}, // a throwaway key
			{use: check, uid: appUID, same: 1},
			{use: command, uid: 0, same: 1}, // root can read the key anyway
			{use: app, uid: appUID, same: 1, holder: "uid 61001 served\n"},
		}},
		{name: "a command creates the key for its account; Caddy running the app as it keeps it", steps: []step{
			{use: command, uid: appUID, holder: "uid 61001 command\n"},
			{use: command, uid: otherUID, err: "the account a command made it for"},
			{use: app, uid: appUID, same: 1, holder: "uid 61001 served\n"},
		}},
		{name: "a key a command made for another account is replaced before Caddy first uses it", steps: []step{
			{use: command, uid: otherUID, holder: "uid 61002 command\n"},
			{use: app, uid: appUID, warned: true, holder: "uid 61001 served\n"},
			{use: app, uid: appUID, same: 2},
			{use: command, uid: otherUID, err: "secret key is for 61001"},
		}},
		{name: "a key made for root's code is kept", steps: []step{
			{use: command, uid: 0, holder: "uid 0 command\n"},
			{use: app, uid: appUID, same: 1, holder: "uid 61001 served\n"},
		}},
		{name: "the app's account changed in Caddy's config", steps: []step{
			{use: app, uid: appUID},
			{use: app, uid: otherUID, same: 1, holder: "uid 61002 served\n"}, // it served the app: kept
			{use: command, uid: appUID, err: "secret key is for 61002"},
		}},
		{name: "a key of an earlier version, with no record", setup: func(t *testing.T, secrets string) {
			writeKey(t, filepath.Join(secrets, keyFileName("app", "/srv/app")), oldKey)
		}, steps: []step{
			{use: command, uid: appUID, err: "start or reload Caddy with this config once"},
			{use: check, uid: appUID}, // a throwaway key
			{use: app, uid: appUID, old: true, holder: "uid 61001 served\n"},
			{use: command, uid: appUID, same: 3, old: true},
		}},
		{name: "a command does not move a key stored by name alone", setup: func(t *testing.T, secrets string) {
			writeKey(t, filepath.Join(secrets, "app.key"), oldKey)
		}, steps: []step{
			{use: command, uid: otherUID, err: "start or reload Caddy with this config once"},
			{use: app, uid: appUID, old: true, holder: "uid 61001 served\n"},
		}},
		{name: "a record Hearth did not write", setup: func(t *testing.T, secrets string) {
			writeKey(t, filepath.Join(secrets, strings.TrimSuffix(keyFileName("app", "/srv/app"), ".key")+".holder"), "uid 61002 served root")
		}, steps: []step{
			{use: command, uid: otherUID, err: "is not a record Hearth wrote"},
			{use: app, uid: appUID, err: "is not a record Hearth wrote"},
		}},
		{name: "the config's storage: Caddy records, commands are refused", storage: true, steps: []step{
			{use: app, uid: appUID, holder: "uid 61001 served\n"},
			{use: command, uid: appUID, same: 1},
			{use: command, uid: otherUID, err: "secret key is for 61001"},
		}},
		{name: "the config's storage: a key made for another account is replaced", storage: true, steps: []step{
			{use: command, uid: otherUID, holder: "uid 61002 command\n"},
			{use: app, uid: appUID, warned: true, holder: "uid 61001 served\n"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := t.TempDir()
			t.Setenv("XDG_DATA_HOME", data)
			secrets := filepath.Join(data, "caddy", "hearth", "secrets")
			if err := os.MkdirAll(secrets, 0o700); err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				tc.setup(t, secrets)
			}
			var storage certmagic.Storage
			holderFile := filepath.Join(secrets, strings.TrimSuffix(keyFileName("app", "/srv/app"), ".key")+".holder")
			if tc.storage {
				shared := t.TempDir()
				storage = &certmagic.FileStorage{Path: shared}
				holderFile = filepath.Join(shared, "hearth", "secrets", filepath.Base(holderFile))
			}
			var keys []string // by step; "" for a refused step
			first := func(i int) int { // the step whose key step i must have
				if tc.steps[i].same != 0 {
					return tc.steps[i].same - 1
				}
				return i
			}
			for i, s := range tc.steps {
				logs, observed := observer.New(zap.InfoLevel)
				spec := &poolSpec{Options: engine.Options{Name: "app", Dir: "/srv/app"}, Settings: SettingsAuto}
				if s.uid != uint32(os.Geteuid()) {
					spec.Credential = &syscall.Credential{Uid: s.uid, Gid: s.uid}
				}
				a := newApp(spec, zap.New(logs), s.use)
				a.storage = storage
				err := a.prepareSettings()
				if s.err != "" {
					var notYours *errKeyNotYours
					if err == nil || !strings.Contains(err.Error(), s.err) {
						t.Fatalf("step %d: %v, want an error with %q", i+1, err, s.err)
					}
					if s.use == command && strings.Contains(s.err, "secret key is for") && !errors.As(err, &notYours) {
						t.Errorf("step %d: %T is not errKeyNotYours", i+1, err)
					}
					keys = append(keys, "")
					continue
				}
				if err != nil {
					t.Fatalf("step %d: %v", i+1, err)
				}
				key, _ := envValue(a.settingsEnv, "SECRET_KEY")
				if len(key) < 32 || s.old != (key == oldKey) {
					t.Fatalf("step %d: key %q", i+1, key)
				}
				for j, earlier := range keys {
					if want := first(i) == first(j); earlier != "" && want != (key == earlier) {
						t.Errorf("step %d: same key as step %d: %v, want %v", i+1, j+1, key == earlier, want)
					}
				}
				keys = append(keys, key)
				if warned := observed.FilterMessageSnippet("replaced the app's secret key").Len() > 0; warned != s.warned {
					t.Errorf("step %d: warned of a replaced key: %v, want %v", i+1, warned, s.warned)
				}
				if s.holder != "" {
					if got, err := os.ReadFile(holderFile); err != nil || string(got) != s.holder {
						t.Errorf("step %d: holder %q (%v), want %q", i+1, got, err, s.holder)
					}
				}
			}
		})
	}
}

func TestParseKeyHolder(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want keyHolder
		ok   bool
	}{
		{"uid 1001 served\n", keyHolder{UID: 1001, Served: true}, true},
		{"uid 0 command\n", keyHolder{UID: 0}, true},
		{"uid 4294967295 command\n", keyHolder{UID: 4294967295}, true},
		{"uid 1001 served", keyHolder{}, false}, // cut short
		{"uid 4294967296 served\n", keyHolder{}, false},
		{"uid -1 served\n", keyHolder{}, false},
		{"uid 01001 served\n", keyHolder{}, false},
		{"uid +1 served\n", keyHolder{}, false},
		{"uid 1001 owner\n", keyHolder{}, false},
		{"uid 1001 served extra\n", keyHolder{}, false},
		{"gid 1001 served\n", keyHolder{}, false},
		{"", keyHolder{}, false},
	} {
		got, ok := parseKeyHolder([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseKeyHolder(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
		if ok && got.String() != tc.in {
			t.Errorf("%+v.String() = %q, want %q", got, got.String(), tc.in)
		}
	}
}
