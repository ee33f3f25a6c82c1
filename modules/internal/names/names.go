// Package names checks the names configs give to what Hearth runs
// (services, jobs, process upstreams): they go into status, logs, metric
// labels, command lines and file names.
package names

import (
	"fmt"
	"strings"
)

// allowed are the characters a name may hold.
const allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"

// Check accepts a name of letters, digits, '.', '_' and '-', at most 64,
// not starting with '-' or '.' (so never a path, an option or a hidden
// file). kind ("service", "job") and example (the config line that names
// one) make the error say what to write.
func Check(kind, name, example string) error {
	if name == "" {
		return fmt.Errorf("a %s needs a name: `%s`", kind, example)
	}
	if len(name) > 64 || strings.Trim(name, allowed) != "" || name[0] == '-' || name[0] == '.' {
		return fmt.Errorf("%s name %q may hold only letters, digits, '.', '_' and '-' (at most 64, not starting with '-' or '.')", kind, name)
	}
	return nil
}

// CheckAccount accepts an account (user or group) name that commands can
// print unquoted in shell lines and a systemd unit: letters, digits, '.',
// '_', '-' and '@' (a directory's user@domain), a '$' only at its end (a
// machine account), at most 64, not starting with '-' (an option) or '@'.
// option is where the name was given (`user` in a block, --apps-user).
func CheckAccount(option, name string) error {
	body := strings.TrimSuffix(name, "$")
	if body == "" || len(name) > 64 || strings.Trim(body, allowed+"@") != "" || name[0] == '-' || name[0] == '@' {
		return fmt.Errorf("%s %q: an account's name here may hold only letters, digits, '.', '_', '-' and '@' (at most 64, not starting with '-' or '@'; a '$' only at its end); the commands printed for it would otherwise need it quoted: rename the account, or write the unit by hand", option, name)
	}
	return nil
}
