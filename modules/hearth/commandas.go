package hearth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hearth-dev/hearth/modules/internal/keeper"
	"github.com/hearth-dev/hearth/modules/safedir"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// A command beside a config, as root for another account's code.
//
// check, manage and exec read a config that may sit in an app's directory,
// where the app's account can edit it, and, as root, run that app's code as
// --user. Whatever root can read that the config pulls in would so reach
// code that account controls: this process's environment, through the
// Caddyfile's {$NAME}, the {env.NAME} placeholders and env_inherit (under
// `sudo -E` or in a root shell it holds the operator's own variables: a DNS
// provider's token for Caddy, a cloud key), and files it imports (`import
// /etc/caddy/secrets.caddy` in the app's block, with an `env` line).
// (env_file and {file.*} are read as the account already.)
//
// So for such a config (one of its files, or a directory its imports
// search, is not root's alone), the command keeps only the variables it
// needs to find its files and speak to the terminal (commandEnvKept),
// says which others it dropped, by name, and has the config adapted by a
// child process running as that account, with that environment: what the
// account cannot read, the config cannot pull in, whatever its files say
// by the time they are read. A config only root can change is read as it
// is: what it pulls in is root's choice (`sudo -E caddy hearth manage` with
// DATABASE_URL exported for root's /etc/caddy/Caddyfile).

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

// AdaptForCommand reads the config of check, manage or exec as JSON, as
// adaptConfig does, for a command that runs an app's code as account
// (--user: user or user:group). As root for code that is not root's, a
// config another account may have written is read with the environment
// reduced (saying on w what was dropped) by a child running as account
// (see above). The config's max_processes becomes this process's
// setting (supervisor.SetMaxProcesses), as Caddy's: the app's code run
// by the command gets the limit the app's workers get.
func AdaptForCommand(configFile, adapterName, account string, w io.Writer) ([]byte, error) {
	data, err := adaptForCommand(configFile, adapterName, account, w)
	if err != nil {
		return nil, err
	}
	cfg, err := ReadConfig(data)
	if err != nil {
		return nil, err
	}
	limit, err := parseMaxProcesses(cfg.Apps.Hearth.MaxProcesses)
	if err != nil {
		return nil, err
	}
	supervisor.SetMaxProcesses(limit)
	return data, nil
}

func adaptForCommand(configFile, adapterName, account string, w io.Writer) ([]byte, error) {
	if os.Geteuid() != 0 || strings.Split(account, ":")[0] == "root" {
		return adaptConfig(configFile, adapterName)
	}
	why := configWrittenByOthers(configFile, adapterName)
	if why == nil {
		return adaptConfig(configFile, adapterName)
	}
	dropped := commandEnvDropped(os.Environ(), account)
	for _, name := range dropped {
		os.Unsetenv(name)
	}
	if len(dropped) > 0 {
		fmt.Fprintf(w, "caddy hearth: the config may have been written by another account than root (%s), and this command runs its code as one: it reads the config without this shell's own variables, so %s were left out of its {$…} and {env.…} placeholders and env_inherit (and of the storage it names). Put what the app needs in its env_file\n",
			printable(why.Error()), strings.Join(dropped, ", "))
	}
	if account == "" {
		return nil, fmt.Errorf("the config may have been written by another account than root (%s): as root, pass the account its apps run as (--user <name>), which reads it", printable(why.Error()))
	}
	// the account as the commands switch to it (its group: the one named,
	// else its primary one; where Caddy's unit gives the apps another
	// group, the child may read less than the app, never more)
	name, group, _ := strings.Cut(account, ":")
	cred, err := supervisor.Credential(name, group, group != "") // (a group typed is the operator's choice, as root's is)
	if err != nil {
		return nil, fmt.Errorf("--user %s: %w", account, err)
	}
	if cred == nil { // this process's own account: root's, read as it is
		return adaptConfig(configFile, adapterName)
	}
	return adaptAs(configFile, adapterName, cred, why)
}

// adaptAs has a child running as cred read the config (see above): `caddy
// adapt` for a Caddyfile, `cat` for JSON.
func adaptAs(configFile, adapterName string, cred *syscall.Credential, why error) ([]byte, error) {
	file, adapterName, err := chooseAdapter(configFile, adapterName)
	if err != nil {
		return nil, err
	}
	file = abs(file)
	var argv []string
	if adapterName == "" {
		argv = []string{"cat", "--", file}
	} else {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		argv = []string{exe, "adapt", "--config", file, "--adapter", adapterName}
	}
	ctx, cancel := context.WithTimeout(context.Background(), adaptAsTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = filepath.Dir(file) // the account may not enter this process's
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setsid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) } // its group
	cmd.WaitDelay = 5 * time.Second                                                      // a pipe held open by another
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &limitedBuffer{buf: &out, max: maxAdaptedConfig}, &limitedBuffer{buf: &errOut, max: 64 << 10, drop: true}
	if err := startOutsideSession(cmd); err != nil {
		return nil, fmt.Errorf("starting the config's reader as %s: %w", AccountName(cred.Uid), err)
	}
	if err := cmd.Wait(); err != nil {
		who := AccountName(cred.Uid)
		return nil, fmt.Errorf("the config may have been written by another account than root (%s), so it is read as %s, the account the app's code runs as, which could not: %v: %s. Give %s read access to the config's files and the directories on their way, or keep the config where only root can change it",
			printable(why.Error()), who, err, printableLines(strings.TrimSpace(errOut.String())), who)
	}
	if adapterName == "" {
		if err := checkJSON(file, out.Bytes()); err != nil {
			return nil, err
		}
	}
	return out.Bytes(), nil
}

// startOutsideSession starts cmd, a child running as an app's account,
// from a thread that left this login's session (keeper.LeaveSession): the
// child does not possess the session keyring's keys (the account's other
// processes could take them from it), nor inherit a raised priority or
// blocked signals. The thread ends with the start.
func startOutsideSession(cmd *exec.Cmd) (err error) {
	done := make(chan struct{})
	go func() { // a goroutine that ends, so its thread does
		defer close(done)
		supervisor.OnDisposableThread(func() {
			if err = keeper.LeaveSession(); err == nil {
				err = cmd.Start()
			}
		})
	}()
	<-done
	return err
}

// adaptAsTimeout bounds the child that reads a config (a FIFO in its
// place would hold it).
const adaptAsTimeout = time.Minute

// maxAdaptedConfig bounds the config a child reads.
const maxAdaptedConfig = 64 << 20

// limitedBuffer keeps up to max bytes, then fails the writer (the child),
// or with drop, discards the rest.
type limitedBuffer struct {
	buf  *bytes.Buffer
	max  int
	drop bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); len(p) > room {
		if !l.drop {
			return 0, fmt.Errorf("more than %d bytes", l.max)
		}
		l.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return l.buf.Write(p)
}

// configWrittenByOthers says why one of the files a config is read from,
// a link on the way to one, or anything under a directory its imports
// search, could have been written by another account than root (nil: none
// could). The config's own file is judged before anything it imports is
// opened (another account's config could name a FIFO or a device there).
// A config that cannot be listed, and an import path made of placeholders
// ({$VAR}, {args[0]}), count as written by others.
func configWrittenByOthers(configFile, adapterName string) error {
	file, _, err := chooseAdapter(configFile, adapterName)
	if err != nil {
		return err
	}
	if err := safedir.TrustedFile(file); err != nil {
		return err
	}
	files, globs, err := caddyfileFiles(configFile, adapterName)
	if err != nil {
		return err
	}
	for _, f := range files {
		if strings.Contains(f, "{") {
			return fmt.Errorf("it imports %s, a path made of placeholders", f)
		}
		if err := safedir.TrustedFile(f); err != nil {
			return err
		}
	}
	for _, dir := range globs {
		if strings.Contains(dir, "{") {
			return fmt.Errorf("it imports from %s, a path made of placeholders", dir)
		}
		if err := trustedTree(dir); err != nil {
			return err
		}
	}
	return nil
}

// trustedTree judges everything under dir, where an import glob searches:
// a file that adds nothing to the config today is read all the same.
func trustedTree(dir string) error {
	real, err := safedir.Trusted(dir)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(real); errors.Is(err, fs.ErrNotExist) {
		return nil // nothing there yet, under a parent Trusted judged
	}
	entries := 0
	return filepath.WalkDir(real, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case path == real:
			return nil
		case entries >= maxImportEntries:
			return fmt.Errorf("%s holds more than %d entries to check", dir, maxImportEntries)
		}
		entries++
		if d.IsDir() {
			_, err := safedir.Trusted(path)
			return err
		}
		return safedir.TrustedFile(path)
	})
}

// maxImportEntries bounds what trustedTree walks.
const maxImportEntries = 10000

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
