package python

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/safedir"
)

// Who an app's stored secret key goes to.
//
// The key `settings auto` and `overlay` give an app is for the app's code,
// which runs as the app's account. The commands beside a config (check,
// manage, exec) run an app's code too, from a config that may sit in an
// app's directory (where `init` writes it), which that app's account can
// edit: a block naming another app's name and directory, run as the
// editing account, would get the other app's key. So each key has a
// record of the account it was handed to, its holder, in this machine's
// data directory (hearth/secrets/<name>-<hash>.holder, beside the key or,
// with another storage, beside where the key would be: a config names its
// storage, so a record there could be anyone's, and a shared storage's
// machines number their accounts each their own way). Caddy records the
// account it runs the app as whenever it starts it; a command that has to
// create the key records the account the command runs the code as, until
// Caddy starts the app. A command hands a stored key only to its holder,
// to root, or to the account the command itself runs as (which can read
// the key's file anyway); for any other account check uses a throwaway
// key, and manage and exec refuse, saying which account to run as. A key a
// command created for another account than the one Caddy then runs the app
// as, and which no app has had yet, is replaced before Caddy hands it on.
// Records and keys change under one lock (hearth/secrets/.lock), so that a
// command and a Caddy starting the app cannot interleave.

// keyUse is who asks for an app's stored key.
type keyUse int

const (
	// keyForCommand: manage or exec, beside a config; the key goes only
	// to its holder's code.
	keyForCommand keyUse = iota
	// keyForCheck: check, beside a config; another account's code gets a
	// throwaway key (any key will do to check), and nothing is stored.
	keyForCheck
	// keyForApp: Caddy starting the app; its account becomes the holder.
	keyForApp
)

// keyHolder is the account an app's stored key was handed to.
type keyHolder struct {
	// UID is the account the app's code ran as with the key.
	UID uint32
	// Served: Caddy has started the app with the key; else only a command
	// has had it (and created it).
	Served bool
}

// String is the record's file content.
func (h keyHolder) String() string {
	how := "command"
	if h.Served {
		how = "served"
	}
	return "uid " + strconv.FormatUint(uint64(h.UID), 10) + " " + how + "\n"
}

// parseKeyHolder reads a record written by keyHolder.String.
func parseKeyHolder(data []byte) (keyHolder, bool) {
	fields := strings.Fields(string(data))
	if len(fields) != 3 || fields[0] != "uid" || !strings.HasSuffix(string(data), "\n") {
		return keyHolder{}, false
	}
	uid, err := strconv.ParseUint(fields[1], 10, 32)
	if err != nil || strconv.FormatUint(uid, 10) != fields[1] {
		return keyHolder{}, false
	}
	switch fields[2] {
	case "served":
		return keyHolder{UID: uint32(uid), Served: true}, true
	case "command":
		return keyHolder{UID: uint32(uid)}, true
	}
	return keyHolder{}, false
}

// privilegedFor reports whether code running as uid could read the stored
// keys anyway: root's, and this process's own account's.
func privilegedFor(uid uint32) bool {
	return uid == 0 || uid == uint32(os.Geteuid())
}

// keyPlace is where one app's key and its holder are kept: this machine's
// data directory (storage nil), or the config's storage.
type keyPlace struct {
	ctx       context.Context
	storage   certmagic.Storage
	name, dir string
}

// holderName is the record's file beside the key's.
func (p keyPlace) holderName() string {
	return strings.TrimSuffix(keyFileName(p.name, p.dir), ".key") + ".holder"
}

// inStorage is the path of a file of this app's in the config's storage.
func (p keyPlace) inStorage(file string) string { return path.Join("hearth", "secrets", file) }

// secretsDir is the data directory's secrets, checked (created if needed).
func secretsDir() (string, error) {
	dir, err := safedir.Ensure(filepath.Join(caddy.AppDataDir(), "hearth", "secrets"), 0o700)
	if err != nil {
		return "", fmt.Errorf("settings: %w", err)
	}
	return dir, nil
}

// holder reads the key's record; found is false when there is none.
func (p keyPlace) holder(dir string) (h keyHolder, found bool, err error) {
	where := filepath.Join(dir, p.holderName())
	data, err := safedir.ReadFile(where, 0o600, 256)
	if errors.Is(err, fs.ErrNotExist) {
		return keyHolder{}, false, nil
	}
	if err != nil {
		return keyHolder{}, false, fmt.Errorf("settings: reading which account app %s's secret key is for: %w", p.name, err)
	}
	if h, found = parseKeyHolder(data); !found {
		return keyHolder{}, false, &errBadHolder{where: where, name: p.name}
	}
	return h, true, nil
}

// errBadHolder: a record that Hearth did not write (only Caddy's user and
// root can write there).
type errBadHolder struct{ where, name string }

func (e *errBadHolder) Error() string {
	return fmt.Sprintf("settings: %s is not a record Hearth wrote of which account app %s's secret key is for; remove it, then restart Caddy with the app's config, which writes it again", e.where, e.name)
}

// setHolder writes the key's record.
func (p keyPlace) setHolder(dir string, h keyHolder) error {
	if err := safedir.WriteFile(dir, p.holderName(), []byte(h.String()), 0o600); err != nil {
		return fmt.Errorf("settings: recording which account app %s's secret key is for: %w", p.name, err)
	}
	return nil
}

// lockSecrets takes the lock under which keys and their records change
// (see above), waiting for it up to secretsLockWait, or until ctx ends (the
// app's start given up: its config was replaced or Caddy is stopping).
func lockSecrets(ctx context.Context, dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("settings: the secret keys' lock: %w", err)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(secretsLockWait); ; {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing it releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("settings: the secret keys' lock (%s) is held by another process for over %s (a hung `caddy hearth` command?): %w", f.Name(), secretsLockWait, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("settings: gave up waiting for the secret keys' lock (%s), held by another process: %w", f.Name(), context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// secretsLockWait bounds the wait for the secret keys' lock: it is held
// for a few file operations (with another storage, for its lock too).
const secretsLockWait = 30 * time.Second

// keyStored reports whether the app has a key: stored, or kept by an
// earlier run or version where secretKey would take it from.
func (p keyPlace) keyStored() (bool, error) {
	if p.storage != nil {
		if p.storage.Exists(p.ctx, p.inStorage(keyFileName(p.name, p.dir))) {
			return true, nil
		}
		key, _, err := localSecretKey(p.name, p.dir)
		return key != "", err
	}
	dir := filepath.Join(caddy.AppDataDir(), "hearth", "secrets")
	for _, f := range []string{filepath.Join(dir, keyFileName(p.name, p.dir)), legacyKeyFile(dir, p.name)} {
		if f == "" {
			continue
		}
		if _, err := os.Lstat(f); err == nil {
			return true, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("settings: %w", err)
		}
	}
	return false, nil
}

// replaceKey stores a new key for the app in place of the one it has.
func (p keyPlace) replaceKey(dir string) (string, error) {
	key, err := hearth.NewSecretKey()
	if err != nil {
		return "", err
	}
	file := keyFileName(p.name, p.dir)
	if p.storage == nil {
		err = safedir.WriteFile(dir, file, []byte(key+"\n"), 0o600)
	} else if err = p.storage.Lock(p.ctx, p.inStorage(file)); err == nil {
		err = p.storage.Store(p.ctx, p.inStorage(file), []byte(key+"\n"))
		_ = p.storage.Unlock(context.WithoutCancel(p.ctx), p.inStorage(file))
	}
	if err != nil {
		return "", fmt.Errorf("settings: replacing app %s's secret key: %w", p.name, err)
	}
	return key, nil
}

// errKeyNotYours: a command would hand an app's stored key to an account
// that is not its holder (check then uses a throwaway key).
type errKeyNotYours struct{ msg string }

func (e *errKeyNotYours) Error() string { return e.msg }

// keyNotYours makes an errKeyNotYours.
func keyNotYours(format string, args ...any) error {
	return &errKeyNotYours{msg: fmt.Sprintf(format, args...)}
}

// keyAccount is the account the app's code runs as: its credential's, or
// this process's (read before a command takes the data directory's owner's
// account to handle the keys, see asDataDirOwner).
func (a *App) keyAccount() uint32 {
	if cred := a.spec.Credential; cred != nil {
		return cred.Uid
	}
	return uint32(os.Geteuid())
}

// storedKey returns the app's stored key for use by code running as
// account (keyAccount), creating it on first use, and keeps the record of
// its holder (see above). migrated reports that it was moved from where an
// earlier version kept it.
func (a *App) storedKey(account uint32) (key string, migrated bool, err error) {
	a.mu.Lock()
	storage := a.storage
	a.mu.Unlock()
	place := keyPlace{ctx: a.pool.Context(), name: a.spec.Name, dir: a.spec.Dir}
	if !inDataDir(storage) {
		place.storage = storage
	}
	dir, err := secretsDir()
	if err != nil {
		return "", false, err
	}
	unlock, err := lockSecrets(place.ctx, dir)
	if err != nil {
		return "", false, err
	}
	defer unlock()
	h, recorded, err := place.holder(dir)
	var bad *errBadHolder
	if a.keyUse == keyForApp && errors.As(err, &bad) {
		// only Caddy's user and root write there: not a command's record,
		// so the key went nowhere else through it
		a.logger.Warn("settings: a record of which account the app's secret key is for was not Hearth's; writing it again", zap.String("file", bad.where))
		err = nil
	}
	if err != nil {
		return "", false, err
	}
	if a.keyUse == keyForApp {
		if key, migrated, err = secretKey(place.ctx, storage, place.name, place.dir, true); err != nil {
			return "", false, err
		}
		if recorded && !h.Served && h.UID != account && !privilegedFor(h.UID) {
			// made by a command for another account's code, and no app has
			// had it: a key that account has seen is not the app's
			if key, err = place.replaceKey(dir); err != nil {
				return "", false, err
			}
			a.logger.Warn("settings: replaced the app's secret key before its first use: a command (caddy hearth manage, exec or check) had made it for code running as another account than the app's",
				zap.String("made_for", accountName(h.UID)), zap.String("app_runs_as", accountName(account)))
		}
		if want := (keyHolder{UID: account, Served: true}); !recorded || h != want {
			if err := place.setHolder(dir, want); err != nil {
				return "", false, err
			}
		}
		return key, migrated, nil
	}
	switch {
	case privilegedFor(account):
	case recorded && h.UID != account:
		return "", false, keyNotYours("app %s's secret key is for %s, the account %s; this command would run the app's code as %s and hand it the key: run it as that account (as root: `--user %s`, with the group its block or Caddy's unit gives it, `--user %s:<group>`). If the app now runs as %s, restart Caddy with its config first: Caddy records the account it runs an app as when it starts it",
			a.spec.Name, accountName(h.UID), holderWhy(h), accountName(account), accountName(h.UID), accountName(h.UID), accountName(account))
	case !recorded:
		stored, err := place.keyStored()
		if err != nil {
			return "", false, err
		}
		if stored {
			return "", false, keyNotYours("app %s has a secret key with no record of the account Caddy runs the app as (an earlier version of Hearth stored it, or the record was removed): restart Caddy with this config once, which records it when it starts the app, then run this again as that account (as root: `--user <account>`)",
				a.spec.Name)
		}
	}
	if key, migrated, err = secretKey(place.ctx, storage, place.name, place.dir, false); err != nil {
		return "", false, err
	}
	if !recorded { // created now: this account's until Caddy starts the app
		if err := place.setHolder(dir, keyHolder{UID: account}); err != nil {
			return "", false, err
		}
	}
	return key, migrated, nil
}

// holderWhy says how the holder of a key became it, for messages.
func holderWhy(h keyHolder) string {
	if h.Served {
		return "Caddy runs the app as"
	}
	return "a command made it for (Caddy has not started the app since)"
}
