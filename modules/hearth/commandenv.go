package hearth

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// The environment of a command beside a config, as root for another account.
//
// check, manage and exec read a config that may sit in an app's directory,
// where the app's account can edit it, and, as root, run that app's code as
// --user. The config reads this process's environment in three ways: the
// Caddyfile's {$NAME}, the {env.NAME} placeholders, and env_inherit. Under
// `sudo -E` or in a root shell that environment holds the operator's own
// variables (a DNS provider's token for Caddy, a cloud key), which an
// edited block would so hand to code that account controls. So before
// such a command reads the config, it keeps only the variables it needs to
// find its files and speak to the terminal (commandEnvKept), which plain
// `sudo` keeps too, and says which others it dropped, by name.

// commandEnvKept are the variables a command beside a config keeps when it
// runs an app's code as another account: the children's base (PATH, LANG,
// LC_*, TZ, TMPDIR), the data and config directories, the account's, the
// terminal's, the shell's bookkeeping, and Go's runtime settings.
var commandEnvKept = []string{
	"PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR",
	"HOME", "USER", "LOGNAME", "SHELL",
	"TERM", "COLORTERM", "NO_COLOR",
	"XDG_DATA_HOME", "XDG_CONFIG_HOME",
	"HEARTH_DEFAULT_USER", "CADDY_ADMIN",
	"SUDO_USER", "SUDO_UID", "SUDO_GID", "SUDO_COMMAND",
	"PWD", "OLDPWD", "SHLVL", "_",
	"GOMEMLIMIT", "GOGC", "GODEBUG", "GOMAXPROCS",
}

// ScrubCommandEnv drops, when this process is root and account (--user)
// names another account, every variable of its environment but those in
// commandEnvKept and LC_*, before the config is read; it says on w which
// it dropped (by name only).
func ScrubCommandEnv(account string, w io.Writer) {
	dropped := commandEnvDropped(os.Environ(), account, os.Geteuid())
	for _, name := range dropped {
		os.Unsetenv(name)
	}
	if len(dropped) > 0 {
		user, _, _ := strings.Cut(account, ":")
		fmt.Fprintf(w, "caddy hearth: the app's code runs as %s, so the config (which that account may have written) sees none of this shell's own variables: %s were left out of its {$…} and {env.…} placeholders and env_inherit. Put what the app needs in its env_file\n",
			user, strings.Join(dropped, ", "))
	}
}

// commandEnvDropped lists, sorted, the names of environ that
// ScrubCommandEnv drops for a process of euid running code as account.
func commandEnvDropped(environ []string, account string, euid int) []string {
	user, _, _ := strings.Cut(account, ":")
	if euid != 0 || user == "" || user == "root" {
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
