package python

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/hearth-dev/hearth/modules/hearth"
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
	cmd.Flags().SetInterspersed(false) // what follows <app> is the command's
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		argv := args[1:]
		if !manage && len(argv) > 0 && argv[0] == "--" {
			argv = argv[1:]
		}
		c, err := prepareAppCommand(*configFile, *adapter, args[0], argv, manage)
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
func prepareAppCommand(configFile, adapter, name string, argv []string, manage bool) (*exec.Cmd, error) {
	if !manage && len(argv) == 0 {
		return nil, errors.New("no command: write it after --, like `caddy hearth exec " + name + " -- python -V`")
	}
	config, err := hearth.LoadConfigFile(configFile, adapter)
	if err != nil {
		return nil, err
	}
	pools, err := configuredPools(config)
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
	p := found.pool
	if p.runtimePath, err = writeRuntime(p.spec.credential != nil); err != nil {
		return nil, err
	}
	if err := p.prepareSettings(); err != nil {
		return nil, err
	}
	env := p.appEnv()
	program, args := "", argv
	switch {
	case manage:
		script := filepath.Join(p.spec.Dir, "manage.py")
		if _, err := os.Stat(script); err != nil {
			return nil, fmt.Errorf("app %s has no manage.py in %s (is it a Django project? for any other command: `caddy hearth exec %s -- <command>`)", name, p.spec.Dir, name)
		}
		program, args = p.spec.Python, append([]string{script}, argv...)
	case argv[0] == "python" || argv[0] == "python3":
		program, args = p.spec.Python, argv[1:]
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
	cmd.Dir = p.spec.Dir
	if _, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS); err == nil { // a terminal
		if t, ok := os.LookupEnv("TERM"); ok && !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "TERM=") }) {
			env = append(env, "TERM="+t) // for shell's line editing; not a secret
		}
	}
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if cred := p.spec.credential; cred != nil && (uint32(os.Geteuid()) != cred.Uid || uint32(os.Getegid()) != cred.Gid) {
		if os.Geteuid() != 0 {
			return nil, fmt.Errorf("app %s runs as user %s: run this as root (sudo caddy hearth …) so that the command runs as that user too", name, p.spec.User)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	syscall.Umask(int(p.spec.Umask)) // this process only starts the command
	return cmd, nil
}

// lookPath finds program in the PATH of env (the app's: its venv's bin
// first), as the app's own processes would.
func lookPath(program string, env []string) (string, error) {
	if strings.Contains(program, "/") {
		return program, nil
	}
	path, _ := envValue(env, "PATH")
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			continue
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
	signal.Ignore(syscall.SIGINT, syscall.SIGQUIT)
	forward := make(chan os.Signal, 2)
	signal.Notify(forward, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(forward)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-forward:
				_ = cmd.Process.Signal(sig)
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(done)
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
