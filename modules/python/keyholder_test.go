package python

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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
		self     = ^uint32(0)
		oldKey   = "key-of-an-earlier-version-0123456789-0123456789"
	)
	euid := uint32(os.Geteuid())
	if euid == appUID || euid == otherUID {
		t.Skipf("the test's accounts include this process's own (uid %d)", euid)
	}
	type step struct {
		use    keyUse
		uid    uint32 // the account the app's code runs as (self: this process's, with no user switch)
		same   int    // the key is that of step #same (1-based); 0: a new one
		err    string // the step is refused with this, changing no file
		old    bool   // the key is the one an earlier version stored
		warn   string // Caddy logs a warning with this
		holder string // the record after the step ("": unchanged or none)
	}
	app, command, check := keyForApp, keyForCommand, keyForCheck
	holderName := strings.TrimSuffix(keyFileName("app", "/srv/app"), ".key") + ".holder"
	const replaced = "replaced the app's secret key before its first use"
	for _, tc := range []struct {
		name    string
		storage bool // the config's storage, not the data directory
		setup   func(t *testing.T, secrets, storage string)
		steps   []step
	}{
		{name: "Caddy records its app's account; commands hand the key to that account alone", steps: []step{
			{use: app, uid: appUID, holder: "uid 61001 served\n"},
			{use: command, uid: appUID, same: 1},
			{use: command, uid: otherUID, err: "secret key is for 61001, the account Caddy runs the app as; this command would run the app's code as 61002"},
			{use: check, uid: otherUID}, // a throwaway key
			{use: check, uid: appUID, same: 1},
			{use: command, uid: 0, same: 1},    // root can read the key anyway
			{use: command, uid: self, same: 1}, // and so can this process's account
			{use: app, uid: appUID, same: 1, holder: "uid 61001 served\n"},
		}},
		{name: "an app of Caddy's own account", steps: []step{
			{use: app, uid: self, holder: fmt.Sprintf("uid %d served\n", euid)},
			{use: command, uid: otherUID, err: fmt.Sprintf("secret key is for %s", accountName(euid))},
			{use: command, uid: self, same: 1},
		}},
		{name: "a command creates the key for its account; Caddy running the app as it keeps it", steps: []step{
			{use: command, uid: appUID, holder: "uid 61001 command\n"},
			{use: command, uid: otherUID, err: "the account a command made it for"},
			{use: app, uid: appUID, same: 1, holder: "uid 61001 served\n"},
		}},
		{name: "a key a command made for another account is replaced before Caddy first uses it", steps: []step{
			{use: command, uid: otherUID, holder: "uid 61002 command\n"},
			{use: app, uid: appUID, warn: replaced, holder: "uid 61001 served\n"},
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
		{name: "a key of an earlier version, with no record", setup: func(t *testing.T, secrets, _ string) {
			writeKey(t, filepath.Join(secrets, keyFileName("app", "/srv/app")), oldKey)
		}, steps: []step{
			{use: command, uid: appUID, err: "restart Caddy with this config once"},
			{use: check, uid: appUID}, // a throwaway key
			{use: app, uid: appUID, old: true, holder: "uid 61001 served\n"},
			{use: command, uid: appUID, same: 3, old: true},
		}},
		{name: "a command does not move a key stored by name alone", setup: func(t *testing.T, secrets, _ string) {
			writeKey(t, filepath.Join(secrets, "app.key"), oldKey)
		}, steps: []step{
			{use: command, uid: otherUID, err: "restart Caddy with this config once"},
			{use: command, uid: 0, err: "restart Caddy with this config, which moves it"},
			{use: app, uid: appUID, old: true, holder: "uid 61001 served\n"},
		}},
		{name: "a record Hearth did not write", setup: func(t *testing.T, secrets, _ string) {
			writeKey(t, filepath.Join(secrets, holderName), "uid 61002 served root")
		}, steps: []step{
			{use: command, uid: otherUID, err: "is not a record Hearth wrote"},
			{use: app, uid: appUID, warn: "was not Hearth's", holder: "uid 61001 served\n"},
			{use: command, uid: appUID, same: 2},
		}},
		{name: "the config's storage: Caddy records here, commands are refused", storage: true, steps: []step{
			{use: app, uid: appUID, holder: "uid 61001 served\n"},
			{use: command, uid: appUID, same: 1},
			{use: command, uid: otherUID, err: "secret key is for 61001"},
		}},
		{name: "the config's storage: a key made for another account is replaced", storage: true, steps: []step{
			{use: command, uid: otherUID, holder: "uid 61002 command\n"},
			{use: app, uid: appUID, warn: replaced, holder: "uid 61001 served\n"},
		}},
		{name: "the config's storage: a record planted there is not read", storage: true, setup: func(t *testing.T, secrets, storage string) {
			// the app's key in this machine's data directory, and a config
			// naming a storage of the editing account's with its own record
			writeKey(t, filepath.Join(secrets, keyFileName("app", "/srv/app")), oldKey)
			planted := filepath.Join(storage, "hearth", "secrets")
			os.MkdirAll(planted, 0o700)
			writeKey(t, filepath.Join(planted, holderName), "uid 61002 served")
		}, steps: []step{
			{use: command, uid: otherUID, err: "restart Caddy with this config once"},
		}},
		{name: "the config's storage: a command does not move a key there", storage: true, setup: func(t *testing.T, secrets, _ string) {
			writeKey(t, filepath.Join(secrets, keyFileName("app", "/srv/app")), oldKey)
			writeKey(t, filepath.Join(secrets, holderName), "uid 61001 served")
		}, steps: []step{
			{use: command, uid: appUID, err: "restart Caddy with this config, which moves it"},
			{use: app, uid: appUID, old: true, holder: "uid 61001 served\n"},
			{use: command, uid: appUID, same: 2, old: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := t.TempDir()
			t.Setenv("XDG_DATA_HOME", data)
			secrets := filepath.Join(data, "caddy", "hearth", "secrets")
			if err := os.MkdirAll(secrets, 0o700); err != nil {
				t.Fatal(err)
			}
			var storage certmagic.Storage
			shared := t.TempDir()
			if tc.storage {
				storage = &certmagic.FileStorage{Path: shared}
			}
			if tc.setup != nil {
				tc.setup(t, secrets, shared)
			}
			var keys []string          // by step; "" for a refused step
			first := func(i int) int { // the step whose key step i must have
				if tc.steps[i].same != 0 {
					return tc.steps[i].same - 1
				}
				return i
			}
			for i, s := range tc.steps {
				logs, observed := observer.New(zap.InfoLevel)
				spec := &poolSpec{Options: engine.Options{Name: "app", Dir: "/srv/app"}, Settings: SettingsAuto}
				if s.uid != self {
					spec.Credential = &syscall.Credential{Uid: s.uid, Gid: s.uid}
				}
				a := newApp(spec, zap.New(logs), s.use)
				a.storage = storage
				before := filesUnder(t, data, shared)
				err := a.prepareSettings()
				if s.err != "" {
					var notYours *errKeyNotYours
					if err == nil || !strings.Contains(err.Error(), s.err) {
						t.Fatalf("step %d: %v, want an error with %q", i+1, err, s.err)
					}
					if strings.Contains(s.err, "secret key is for") && !errors.As(err, &notYours) {
						t.Errorf("step %d: %T is not errKeyNotYours", i+1, err)
					}
					if after := filesUnder(t, data, shared); after != before {
						t.Errorf("step %d was refused, but changed the files:\n%s\nto\n%s", i+1, before, after)
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
				for _, warning := range []string{replaced, "was not Hearth's"} {
					if warned := observed.FilterMessageSnippet(warning).Len() > 0; warned != (s.warn == warning) {
						t.Errorf("step %d: warned %q: %v", i+1, warning, warned)
					}
				}
				if s.holder != "" {
					if got, err := os.ReadFile(filepath.Join(secrets, holderName)); err != nil || string(got) != s.holder {
						t.Errorf("step %d: holder %q (%v), want %q", i+1, got, err, s.holder)
					}
				}
			}
		})
	}
}

// filesUnder lists the files under dirs with their contents.
func filesUnder(t *testing.T, dirs ...string) string {
	var out []string
	for _, dir := range dirs {
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && d.Name() != ".lock" {
				data, _ := os.ReadFile(path)
				out = append(out, path+": "+strings.TrimSpace(string(data)))
			}
			return nil
		})
	}
	return strings.Join(out, "\n")
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

// TestSecretsLockIsExclusive: a second taker of the secret keys' lock (a
// command while Caddy starts an app) waits until the first lets go.
func TestSecretsLockIsExclusive(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockSecrets(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	// a taker whose context ends stops waiting, saying why
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if second, err := lockSecrets(ctx, dir); err == nil || !strings.Contains(err.Error(), "gave up waiting") {
		if second != nil {
			second()
		}
		t.Errorf("a taker whose context ended: %v, want it to give up", err)
	} else if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("a taker whose context ended after 50ms waited %s", waited)
	}
	released := make(chan struct{})
	taken := make(chan error, 1)
	go func() {
		second, err := lockSecrets(context.Background(), dir)
		select {
		case <-released:
		default:
			err = errors.New("taken while the first taker held it")
		}
		if second != nil {
			second()
		}
		taken <- err
	}()
	time.Sleep(100 * time.Millisecond) // the second taker waits meanwhile
	close(released)
	unlock()
	select {
	case err := <-taken:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the lock was not taken once let go")
	}
}
