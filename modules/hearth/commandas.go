package hearth

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/hearth-dev/hearth/modules/safedir"
)

// A command beside a config, as root for another account's code.
//
// check, manage and exec read a config that may sit in an app's directory,
// where the app's account can edit it, and, as root, run that app's code as
// --user. Whatever root can read that the config pulls in would so reach
// code that account controls:
//   - this process's environment, through the Caddyfile's {$NAME}, the
//     {env.NAME} placeholders and env_inherit: under `sudo -E` or in a root
//     shell it holds the operator's own variables (a DNS provider's token
//     for Caddy, a cloud key). The command keeps only the variables it needs
//     to find its files and speak to the terminal (commandEnvKept), and says
//     which others it dropped, by name.
//   - files the Caddyfile imports (`import /etc/caddy/secrets.caddy` inside
//     the app's block, with an `env` line): the command refuses a config
//     any of whose files the account cannot read itself. (env_file and
//     {file.*} are read as the account already.)
//
// Both apply only to a config that may have been written by another
// account than root: for root's own config, what it pulls in is root's
// choice (`sudo -E caddy hearth manage` with DATABASE_URL exported for an
// `env DATABASE_URL {env.DATABASE_URL}` of /etc/caddy/Caddyfile).

// commandEnvKept are the variables a command beside a config keeps when it
// runs an app's code as another account: the children's base (PATH, LANG,
// LC_*, TZ, TMPDIR), the data and config directories, the account's, the
// terminal's and Go's runtime settings. Not sudo's SUDO_COMMAND (the
// whole command line, `sudo env TOKEN=… caddy …`) nor the shell's `_`.
var commandEnvKept = []string{
	"PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR",
	"HOME", "USER", "LOGNAME", "SHELL",
	"TERM", "COLORTERM", "NO_COLOR",
	"XDG_DATA_HOME", "XDG_CONFIG_HOME",
	"HEARTH_DEFAULT_USER", "CADDY_ADMIN",
	"GOMEMLIMIT", "GOGC", "GODEBUG", "GOMAXPROCS",
}

// PrepareCommandAs readies a command beside a config for running an app's
// code as account (--user: user or user:group) when this process is root
// and the config may have been written by another account (one of its
// files, or where it imports from, is not root's alone; see above): it
// drops the environment's other variables, saying on w which, and refuses
// a Caddyfile the account cannot read in full. For root's own config (what
// it pulls in is root's choice), for root's code, and not as root, it does
// nothing.
func PrepareCommandAs(configFile, adapterName, account string, w io.Writer) error {
	if os.Geteuid() != 0 || strings.Split(account, ":")[0] == "root" {
		return nil
	}
	files, why := configWrittenByOthers(configFile, adapterName)
	if why == nil {
		return nil
	}
	dropped := commandEnvDropped(os.Environ(), account)
	for _, name := range dropped {
		os.Unsetenv(name)
	}
	if len(dropped) > 0 {
		fmt.Fprintf(w, "caddy hearth: the config may have been written by another account than root (%v), and this command runs its code as one: it reads the config without this shell's own variables, so %s were left out of its {$…} and {env.…} placeholders and env_inherit (and of the storage it names). Put what the app needs in its env_file\n",
			why, strings.Join(dropped, ", "))
	}
	uid, gid, ok := accountIDs(account)
	if !ok {
		return nil // no such account (or none given): the command refuses it, saying so
	}
	for _, f := range files {
		if err := readableBy(f, uid, gid); err != nil {
			return fmt.Errorf("the config may have been written by another account than root (%v), and it reads %s, which %s cannot read (%v): as root, this command would read it for that account's code, which would get what it holds (an `env` line, say). Run it with a config only root can change, or one that account can read in full", why, f, account, err)
		}
	}
	return nil
}

// configWrittenByOthers lists the files a config is read from and says
// why one of them, or a directory its imports search, could have been
// written by another account than root (nil: none could).
func configWrittenByOthers(configFile, adapterName string) ([]string, error) {
	files, globs, err := caddyfileFiles(configFile, adapterName)
	if err != nil {
		return nil, nil // adapting the config says what is wrong
	}
	if len(files) == 0 { // JSON
		file, _, err := chooseAdapter(configFile, adapterName)
		if err != nil {
			return nil, nil
		}
		files = []string{abs(file)}
	}
	for _, f := range files {
		if err := safedir.TrustedFile(f); err != nil {
			return files, err
		}
	}
	for _, dir := range globs {
		if _, err := safedir.Trusted(dir); err != nil {
			return files, err
		}
	}
	return files, nil
}

// commandEnvDropped lists, sorted, the names of environ that
// PrepareCommandAs drops, as root, for code run as account: all but
// commandEnvKept and LC_*, unless account is root (an empty account too:
// the command refuses to run any app's code then, but its config's
// storage is read).
func commandEnvDropped(environ []string, account string) []string {
	if name, _, _ := strings.Cut(account, ":"); name == "root" {
		return nil
	}
	var dropped []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if name != "" && !slices.Contains(commandEnvKept, name) && !strings.HasPrefix(name, "LC_") && !slices.Contains(dropped, name) {
			dropped = append(dropped, name)
		}
	}
	slices.Sort(dropped)
	return dropped
}

// accountIDs resolves account (user or user:group) as the commands switch
// to it: the user's uid, and the group's gid or else the user's primary
// one (the only group the command's child gets). ok is false for root,
// for no account, and for one that does not exist.
func accountIDs(account string) (uid, gid uint32, ok bool) {
	name, group, _ := strings.Cut(account, ":")
	if name == "" || name == "root" {
		return 0, 0, false
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, false
	}
	gidText := u.Gid
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return 0, 0, false
		}
		gidText = g.Gid
	}
	uid64, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid64, err2 := strconv.ParseUint(gidText, 10, 32)
	if err1 != nil || err2 != nil || uid64 == 0 {
		return 0, 0, false
	}
	return uint32(uid64), uint32(gid64), true
}

// readableBy reports why the account uid (with the one group gid) could
// not read the file at path, by the permission bits (ACLs aside): every
// directory on the way must let it search, and the file let it read.
func readableBy(path string, uid, gid uint32) error {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	for dir := filepath.Dir(real); ; dir = filepath.Dir(dir) {
		if err := permitted(dir, uid, gid, 1); err != nil {
			return err
		}
		if filepath.Dir(dir) == dir {
			break
		}
	}
	return permitted(real, uid, gid, 4)
}

// permitted checks one permission bit (4 read, 1 search) of path for uid
// and gid.
func permitted(path string, uid, gid uint32, bit fs.FileMode) error {
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("no owner information")
	}
	mode, shift := info.Mode().Perm(), 0
	switch {
	case st.Uid == uid:
		shift = 6
	case st.Gid == gid:
		shift = 3
	}
	if mode&(bit<<shift) == 0 {
		what := "read"
		if bit == 1 {
			what = "enter"
		}
		return fmt.Errorf("it may not %s %s: mode %04o, owner %s, group %d", what, path, mode, AccountName(st.Uid), st.Gid)
	}
	return nil
}
