package python

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"github.com/caddyserver/caddy/v2"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/internal/keeper"
	"github.com/hearth-dev/hearth/modules/safedir"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

func init() {
	hearth.RegisterCommand(manageCommand)
	hearth.RegisterCommand(execCommand)
}

// manageCommand is `caddy hearth manage <app> <args…>`: the app's
// manage.py, in the app's exact environment.
func manageCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "manage [--config <file>] <app> <manage.py arguments…>",
		Short: "Runs the app's manage.py in its exact environment",
		Long: `Runs python manage.py <arguments> for the Django app named <app> in the config,
exactly as its workers run: in its dir, with its interpreter or venv, its env and
env_file, what settings overlay or auto sets (the same secret key), and as its
user. The terminal is passed through, so createsuperuser and shell work
interactively. The exit code is manage.py's.

  caddy hearth manage mysite createsuperuser
  caddy hearth manage mysite migrate
  caddy hearth manage --config /etc/caddy/Caddyfile mysite shell`,
		Args: cobra.MinimumNArgs(1),
	}
	return appCommand(cmd, true)
}

// execCommand is `caddy hearth exec <app> -- <command…>`: any command in
// the app's exact environment.
func execCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "exec [--config <file>] <app> -- <command…>",
		Short: "Runs a command in the app's exact environment",
		Long: `Runs <command> for the app named <app> in the config, exactly as its workers run:
in its dir, with its environment (env, env_file, the venv's PATH, what settings
overlay or auto sets) and as its user. "python" is the app's interpreter. The
terminal is passed through; the exit code is the command's.

  caddy hearth exec mysite -- python -c 'import django; print(django.VERSION)'
  caddy hearth exec mysite -- celery -A mysite worker`,
		Args: cobra.MinimumNArgs(2),
	}
	return appCommand(cmd, false)
}

// appCommand adds the flags and the run function of manage (manage set)
// or exec to cmd.
func appCommand(cmd *cobra.Command, manage bool) *cobra.Command {
	configFile := cmd.Flags().String("config", "", "the config (a Caddyfile or JSON; default ./Caddyfile)")
	adapter := cmd.Flags().String("adapter", "", "the config adapter (default: as caddy run chooses it)")
	account := cmd.Flags().String("user", "", "run as this account (user or user:group) when the app's block sets none; as root, required (`--user root` if the app runs as root)")
	cmd.Flags().SetInterspersed(false) // what follows <app> is the command's
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		argv := args[1:]
		if !manage && len(argv) > 0 && argv[0] == "--" {
			argv = argv[1:]
		}
		c, err := prepareAppCommand(*configFile, *adapter, *account, args[0], argv, manage)
		if err != nil {
			return err
		}
		code, err := runAttached(c)
		if err != nil {
			return err
		}
		os.Exit(code)
		return nil
	}
	return cmd
}

// prepareAppCommand builds the command that runs argv (manage: manage.py's
// arguments) for the app named name of a config, in its environment.
func prepareAppCommand(configFile, adapter, account, name string, argv []string, manage bool) (*exec.Cmd, error) {
	if !manage && len(argv) == 0 {
		return nil, errors.New("no command: write it after --, like `caddy hearth exec " + name + " -- python -V`")
	}
	config, err := hearth.AdaptForCommand(configFile, adapter, account, os.Stderr)
	if err != nil {
		return nil, err
	}
	pools, err := configuredPools(config, account)
	if err != nil {
		return nil, err
	}
	var names []string
	var found *configuredPool
	for i, c := range pools {
		names = append(names, c.name)
		if c.name == name && found == nil {
			found = &pools[i]
		}
	}
	if found == nil {
		if len(names) == 0 {
			return nil, fmt.Errorf("the config has no wsgi or asgi app, so none named %q", name)
		}
		return nil, fmt.Errorf("the config has no app named %q; its apps: %s (an app's name is its `name`, or the first part of its module)", name, strings.Join(names, ", "))
	}
	if found.err != nil {
		return nil, fmt.Errorf("the config of app %s is refused: %w", name, found.err)
	}
	a := found.app
	if a.runtimePath, err = a.pool.Runtime(); err != nil {
		return nil, err
	}
	if err := a.prepareSettingsSaying(os.Stderr); err != nil {
		return nil, err
	}
	env := a.appEnv()
	program, args := "", argv
	switch {
	case manage:
		script := filepath.Join(a.spec.Dir, "manage.py")
		if _, err := os.Stat(script); err != nil {
			return nil, fmt.Errorf("app %s has no manage.py in %s (is it a Django project? for any other command: `caddy hearth exec %s -- <command>`)", name, a.spec.Dir, name)
		}
		program, args = a.spec.Python, append([]string{script}, argv...)
	case argv[0] == "python" || argv[0] == "python3":
		program, args = a.spec.Python, argv[1:]
	default:
		if program, err = lookPath(argv[0], env); err != nil {
			return nil, err
		}
		args = argv[1:]
	}
	cmd := exec.Command(program, args...)
	cmd.Args[0] = argv[0]
	if manage {
		cmd.Args[0] = "python"
	}
	cmd.Dir = a.spec.Dir
	if isTerminal(os.Stdin) {
		if t, ok := os.LookupEnv("TERM"); ok && !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "TERM=") }) {
			env = append(env, "TERM="+t) // for shell's line editing; not a secret
		}
	}
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if cred := a.spec.Credential; cred != nil && (uint32(os.Geteuid()) != cred.Uid || uint32(os.Getegid()) != cred.Gid) {
		// a new session, with a pseudo-terminal of its own in place of
		// this (root's) terminal (runAttached): the app's code can neither
		// push keystrokes into this one with TIOCSTI nor go on reading it
		// once the command has ended
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setsid: true}
		if err := limitProcessesFor(cred); err != nil {
			return nil, err
		}
	}
	syscall.Umask(int(a.spec.Umask)) // this process only starts the command
	return cmd, nil
}

// limitProcessesFor gives this process, which only starts the command
// (and ends with it), the config's max_processes as its RLIMIT_NPROC, soft
// and hard, for the command to inherit, as the app's workers have it when
// Caddy starts them as cred's account (not root's). This process, root,
// is not held by it; the command is, from its start: it is refused
// (EAGAIN) when the account already has more.
func limitProcessesFor(cred *syscall.Credential) error {
	limit := supervisor.MaxProcesses()
	if limit == 0 || cred.Uid == 0 || os.Geteuid() != 0 {
		// not root: this process would hold itself too (its own threads
		// counted against its own account, were it the same)
		return nil
	}
	if err := keeper.LimitProcesses(limit); err != nil {
		return fmt.Errorf("setting the process limit (max_processes %d) for the command: %w", limit, err)
	}
	return nil
}

// commandCredential is the account a command beside a config (check,
// manage, exec) runs the app's code as: the app's user when its block names
// one, else the --user account (nil: this process's own). As root, --user
// is required and must name the block's user when there is one: the app's
// code (settings.py, manage.py, the venv) may have been changed by the
// app's account, and so may a config in the app's directory, where `init`
// writes it: a block changed to `user root`, or to another app's account,
// must not move that code to root's or the other account's rights. Not
// root, switching to another account is refused (it needs root).
func commandCredential(spec *poolSpec, account string) (*syscall.Credential, error) {
	cred := spec.Credential
	asRoot := os.Geteuid() == 0
	var given *syscall.Credential
	if account != "" {
		user, group, _ := strings.Cut(account, ":")
		var err error
		// root, or a group (a privileged one: a block with allow_root may
		// name one), typed by the operator is the operator's choice
		if given, err = supervisor.Credential(user, group, user == "root" || group != ""); err != nil {
			return nil, fmt.Errorf("--user %s: %w", account, err)
		}
		if given == nil { // this process's own account
			given = &syscall.Credential{Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid())}
		}
	}
	if asRoot && cred != nil && spec.User == "" && spec.Group == "" {
		// not the block's: HEARTH_DEFAULT_USER of this command's own
		// environment, root's choice as --user is; --user decides, and
		// naming that account alone takes its group from there too
		if given != nil && given.Uid == cred.Uid && !strings.Contains(account, ":") {
			given.Gid = cred.Gid
		}
		cred = nil
	}
	switch {
	case asRoot && given == nil && cred == nil:
		return nil, fmt.Errorf("this would run app %s's code as root, and its block names no `user`: pass the account the app runs as (`--user <name>`, e.g. the one of HEARTH_DEFAULT_USER in Caddy's unit), or `--user root` if Caddy runs the app as root", spec.Name)
	case asRoot && given == nil:
		return nil, fmt.Errorf("app %s's block names user %s: as root, confirm the account its code runs as with `--user %s` (the config may be in the app's directory, where the app's account could change it)", spec.Name, accountName(cred.Uid), accountName(cred.Uid))
	case asRoot && cred != nil && (given.Uid != cred.Uid || given.Gid != cred.Gid):
		// the group too: a block changed to `group docker` (or shadow,
		// disk) would give the app's code that group's rights
		privileged := ""
		if why := supervisor.PrivilegedGroup(uint64(cred.Gid)); why != "" {
			privileged = " (a privileged group: " + why + ")"
		}
		return nil, fmt.Errorf("app %s's block names user %s with group %s%s, not --user %s (uid %d, gid %d): refused, as the config may have been changed by the app's account; check the config, then pass the account and group it should name (`--user %s:<group>` when its block sets a group)", spec.Name, accountName(cred.Uid), supervisor.GroupName(uint64(cred.Gid)), privileged, account, given.Uid, given.Gid, accountName(cred.Uid))
	case cred == nil:
		cred = given
	}
	if cred == nil || uint32(os.Geteuid()) == cred.Uid && uint32(os.Getegid()) == cred.Gid {
		if !asRoot {
			if err := codeOfOthers(spec); err != nil {
				return nil, err
			}
		}
		return nil, nil // already that account
	}
	if !asRoot {
		return nil, fmt.Errorf("app %s runs as another account (uid %d): run this as root (sudo caddy hearth …) so that its code runs as that account", spec.Name, cred.Uid)
	}
	return cred, nil
}

// codeOfOthers refuses to run, as this (not root) account, an app whose
// directory or interpreter's directories belong to another account than
// this one or root, or that a group not this account's own (or anyone)
// may write: under the unit, an app's block usually names no user
// (HEARTH_DEFAULT_USER is in the unit, not in an admin's shell), and an
// admin running `caddy hearth manage` without sudo ran code the apps'
// account could change (settings.py, a .pth file in its venv) with the
// admin's own rights, to plant something for the admin's next sudo.
func codeOfOthers(spec *poolSpec) error {
	places := []string{spec.Dir}
	if strings.Contains(spec.Python, "/") {
		places = append(places, filepath.Dir(spec.Python), filepath.Dir(filepath.Dir(spec.Python)))
	}
	me := uint32(os.Geteuid())
	for _, place := range places {
		info, err := os.Stat(place)
		if err != nil {
			continue // (the command says what is missing)
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			continue
		}
		if st.Uid != 0 && st.Uid != me {
			return fmt.Errorf("app %s's code would run as you (%s), but %s belongs to %s: that account could change the code to act with your rights; run this as root with the app's account (`sudo caddy hearth … --user %s`), or as %s",
				spec.Name, accountName(me), place, accountName(st.Uid), accountName(st.Uid), accountName(st.Uid))
		}
		// writable by a group other than this account's own, or by anyone:
		// its members (the apps' account, given the project to write its
		// database beside) could put a module there that shadows one the
		// app imports
		// (sticky or not: the sticky bit keeps others from removing
		// files, not from adding a json.py that shadows the standard one)
		if info.Mode().Perm()&0o002 != 0 || info.Mode().Perm()&0o020 != 0 && st.Gid != uint32(os.Getegid()) {
			return fmt.Errorf("app %s's code would run as you (%s), but others can write %s (mode %04o, group %d): they could put code there that runs with your rights; run this as root with the app's account (`sudo caddy hearth … --user <its account>`)",
				spec.Name, accountName(me), place, info.Mode().Perm(), st.Gid)
		}
	}
	return nil
}

// prepareSettingsSaying is prepareSettings for the commands that work
// beside a config (check, manage, exec): when it has to create the app's
// secret key, it says where on w, since a key made by another user than
// Caddy's, or in another data directory, is not the one the app gets.
func (a *App) prepareSettingsSaying(w io.Writer) error {
	place, existed := a.secretKeyExists()
	keyed := a.spec.Settings == SettingsAuto || a.spec.Settings == SettingsOverlay
	owner := a.keysOwner
	if keyed && owner != nil {
		fmt.Fprintf(w, "caddy hearth: app %s's secret key is handled as %s, the owner of Caddy's data directory %s\n", a.spec.Name, owner.name, caddy.AppDataDir())
	}
	if err := a.prepareSettings(); err != nil {
		return err
	}
	if a.throwawayWhy != nil {
		fmt.Fprintf(w, "caddy hearth: app %s is checked with a throwaway secret key, not its stored one: %v\n", a.spec.Name, a.throwawayWhy)
	}
	if _, exists := a.secretKeyExists(); keyed && !existed && exists {
		switch {
		case owner != nil:
			fmt.Fprintf(w, "caddy hearth: created app %s's secret key (%s) as %s, the owner of that data directory; Caddy running as that account, with the same XDG_DATA_HOME, uses it\n", a.spec.Name, place, owner.name)
		case os.Geteuid() == 0 && filepath.Clean(caddy.AppDataDir()) != hearth.UnitDataDir:
			fmt.Fprintf(w, "caddy hearth: created app %s's secret key (%s); Caddy must keep its data there too, so run `caddy run` as root, with the same XDG_DATA_HOME. For a Caddy run by the unit of `caddy hearth systemd`, which keeps its data in %s by default, run this with XDG_DATA_HOME=%s instead (`sudo env XDG_DATA_HOME=%s caddy hearth …`)\n",
				a.spec.Name, place, hearth.UnitDataDir, filepath.Dir(hearth.UnitDataDir), filepath.Dir(hearth.UnitDataDir))
		default:
			fmt.Fprintf(w, "caddy hearth: created app %s's secret key (%s); Caddy must keep its data there too, so run `caddy run` as this user, with the same XDG_DATA_HOME\n", a.spec.Name, place)
		}
	}
	return nil
}

// lookPath finds program in the PATH of env (the app's: its venv's bin
// first), as the app's own processes would.
func lookPath(program string, env []string) (string, error) {
	if strings.Contains(program, "/") {
		return program, nil
	}
	path, _ := envValue(env, "PATH")
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue // "" or a relative entry would resolve against the app's directory
		}
		candidate := filepath.Join(dir, program)
		if info, err := os.Stat(candidate); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
			return candidate, nil
		}
	}
	return "", fmt.Errorf("%s is not in the app's PATH (%s)", program, path)
}

// runAttached runs cmd in this terminal's foreground: the terminal's
// signals (Ctrl-C, Ctrl-\) reach the command, not this process, and a
// SIGTERM or SIGHUP sent to this process is passed on. It returns the
// command's exit code (128+n for a command ended by signal n).
func runAttached(cmd *exec.Cmd) (int, error) {
	// caught, not ignored: an ignored signal stays ignored in the command
	// (Ctrl-C would not stop `manage shell`), a caught one is reset to its
	// default there. The terminal sends SIGINT and SIGQUIT to the whole
	// foreground group, the command included; sent to this process alone
	// (no terminal, or kill), they are passed on like SIGTERM and SIGHUP.
	forward := make(chan os.Signal, 4)
	signal.Notify(forward, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(forward)
	var relay *ptyRelay
	if cmd.SysProcAttr != nil && cmd.SysProcAttr.Credential != nil {
		// as the app's account: the command must not possess the keys of
		// this login's session keyring, nor keep a real-time or raised
		// priority. Only this thread leaves them, so the command is started
		// from it; it is never given back to Go (this process ends with the
		// command).
		runtime.LockOSThread()
		if err := keeper.LeaveSession(); err != nil {
			return 0, err
		}
		// nor hold this terminal (execpty.go)
		var err error
		if relay, err = attachPTY(cmd); err != nil {
			return 0, err
		}
	}
	if err := cmd.Start(); err != nil {
		if relay != nil {
			relay.finish()
		}
		if cred := cmd.SysProcAttr; errors.Is(err, syscall.EAGAIN) && cred != nil && cred.Credential != nil {
			uid := cred.Credential.Uid
			err = fmt.Errorf("%w: the account %s has more than max_processes (%d) processes and threads; see what runs as it (ps -L -u %d), or raise max_processes in the global hearth block", err, safedir.Owner(uid), supervisor.MaxProcesses(), uid)
		}
		return 0, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	if relay != nil {
		relay.started()
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-forward:
				if (sig == syscall.SIGINT || sig == syscall.SIGQUIT) && cmd.SysProcAttr == nil && isTerminal(os.Stdin) {
					continue // the terminal sent it to the command too
				}
				_ = cmd.Process.Signal(sig)
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	if relay != nil {
		relay.finish()
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exit):
		if status, ok := exit.Sys().(syscall.WaitStatus); ok && status.Signaled() {
			return 128 + int(status.Signal()), nil
		}
		return exit.ExitCode(), nil
	}
	return 0, err
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
