package supervisor

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"os"
	"os/user"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/caddyserver/caddy/v2"
)

// Env describes the environment of a child process (a worker, a
// before_start command, the pre-launch check, a process upstream). A child
// starts from a clean environment, never from Caddy's whole one: Caddy's
// holds credentials meant for Caddy alone (DNS provider tokens, TSIG keys),
// and NOTIFY_SOCKET, which would let a child speak to systemd for Caddy.
// Build assembles, each layer winning over the ones before it:
//
//  1. the base: PATH, LANG, LC_*, TZ and TMPDIR as Caddy has them (PATH
//     defaults to the usual system directories when Caddy has none), and
//     HOME, USER and LOGNAME of the account the child runs as;
//  2. Inherit: the variables named there, from Caddy's environment (a
//     name Caddy's environment lacks is skipped);
//  3. Adjust: what Hearth itself sets (a venv's VIRTUAL_ENV and PATH);
//  4. File: the env_file;
//  5. Vars: env, whose values may use global placeholders ({env.HOME}).
//
// Variables a caller adds afterwards (settings auto, HEARTH_*, PORT) come
// last, and win (Start keeps the last of each name). Names starting with
// ReservedPrefix are Hearth's own: Build refuses them in every layer, so
// an app can rely on what Hearth puts there.
type Env struct {
	// Inherit names variables passed from Caddy's environment (env_inherit).
	Inherit []string
	// Credential is the account the child runs as (Credential's answer
	// for the `user` option or HEARTH_DEFAULT_USER); nil is Caddy's own.
	Credential *syscall.Credential
	// Adjust, if set, edits the variables after the base and Inherit.
	Adjust func(vars map[string]string)
	// File is a dotenv file (an absolute path), "" for none.
	File string
	// Vars are the explicit variables (env).
	Vars map[string]string
}

// DefaultPath is a child's PATH when Caddy's environment has none (the
// same as systemd's default).
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Build returns the child's environment as sorted KEY=value lines.
func (e Env) Build() ([]string, error) {
	return e.build(os.Environ(), lookupAccount)
}

// account is what the base takes from the child's account.
type account struct{ home, name string }

// lookupAccount finds an account by its uid ("" is Caddy's own).
func lookupAccount(uid string) (account, error) {
	if uid == "" {
		uid = strconv.Itoa(os.Geteuid())
	}
	u, err := user.LookupId(uid)
	if err != nil {
		return account{}, err
	}
	return account{home: u.HomeDir, name: u.Username}, nil
}

// ReservedPrefix starts the names of the variables Hearth passes its
// children (HEARTH_APP, HEARTH_PORT, HEARTH_SOCKET, …): env, env_file and
// env_inherit may not set them.
const ReservedPrefix = "HEARTH_"

// reservedName is the error for a variable named with ReservedPrefix.
func reservedName(option, name string) error {
	return fmt.Errorf("%s: %s: names starting with %s are Hearth's own (it tells each process its app, port or socket in them); rename the variable", option, name, ReservedPrefix)
}

// baseNames are taken from Caddy's environment as they are; LC_* too.
var baseNames = []string{"PATH", "LANG", "TZ", "TMPDIR"}

func (e Env) build(parent []string, lookup func(string) (account, error)) ([]string, error) {
	if err := CheckEnvNames("env_inherit", e.Inherit); err != nil {
		return nil, err
	}
	caddyEnv := map[string]string{}
	for _, kv := range parent {
		if k, v, ok := strings.Cut(kv, "="); ok {
			caddyEnv[k] = v
		}
	}
	vars := map[string]string{"PATH": DefaultPath}
	for k, v := range caddyEnv {
		if strings.HasPrefix(k, "LC_") || slices.Contains(baseNames, k) {
			vars[k] = v
		}
	}
	if err := e.setAccount(vars, caddyEnv, lookup); err != nil {
		return nil, err
	}
	for _, k := range e.Inherit {
		if v, ok := caddyEnv[k]; ok {
			vars[k] = v
		}
	}
	if e.Adjust != nil {
		e.Adjust(vars)
	}
	if e.File != "" {
		fileVars, err := ReadEnvFile(e.File, e.Credential)
		if err != nil {
			return nil, err
		}
		for _, k := range slices.Sorted(maps.Keys(fileVars)) {
			if strings.HasPrefix(k, ReservedPrefix) {
				return nil, reservedName("env_file "+e.File, k)
			}
			vars[k] = fileVars[k]
		}
	}
	for k, v := range e.Vars {
		if !validEnvName(k) {
			return nil, fmt.Errorf("env: %q is not a valid variable name", k)
		}
		if strings.HasPrefix(k, ReservedPrefix) {
			return nil, reservedName("env", k)
		}
		v, err := e.replace(k, v)
		if err != nil {
			return nil, err
		}
		if err := checkEnvValue(v); err != nil {
			return nil, fmt.Errorf("env: %s: %w (the value is not shown)", k, err)
		}
		vars[k] = v
	}
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out, nil
}

// replace fills the global placeholders in the value v of env k. A
// {file.<path>} is read as the account the processes run as, like an
// env_file, not as Caddy's placeholder reads it (with Caddy's own rights,
// through any link, a FIFO blocking the load for good, a missing file
// quietly empty): the app's account could otherwise put a link to another
// app's secrets, or Caddy's, where a path in its own directory is named.
func (e Env) replace(k, v string) (string, error) {
	var failed error
	repl := caddy.NewReplacer().WithoutFile()
	repl.Map(func(key string) (any, bool) {
		path, ok := strings.CutPrefix(key, "file.")
		if !ok {
			return nil, false
		}
		data, err := readAsAccount("env "+k+"'s {file."+path+"}", "a file holding the value", path, e.Credential)
		if err != nil {
			failed = cmp.Or(failed, err)
			return "", true
		}
		data = bytes.TrimSuffix(data, []byte("\n")) // as Caddy's {file.*} reads it
		data = bytes.TrimSuffix(data, []byte("\r"))
		return string(data), true
	})
	v = repl.ReplaceKnown(v, "")
	return v, failed
}

// setAccount sets HOME, USER and LOGNAME: those of the child's account
// when it is not Caddy's, or for Caddy's own account Caddy's values,
// looked up where Caddy has none.
func (e Env) setAccount(vars, caddyEnv map[string]string, lookup func(string) (account, error)) error {
	if e.Credential != nil {
		uid := strconv.FormatUint(uint64(e.Credential.Uid), 10)
		a, err := lookup(uid)
		if err != nil {
			return fmt.Errorf("the account of uid %s: %w", uid, err)
		}
		vars["HOME"], vars["USER"], vars["LOGNAME"] = a.home, a.name, a.name
		return nil
	}
	var own *account
	for _, k := range []string{"HOME", "USER", "LOGNAME"} {
		if v, ok := caddyEnv[k]; ok && v != "" {
			vars[k] = v
			continue
		}
		if own == nil {
			a, err := lookup("")
			if err != nil {
				continue // an account without a passwd entry (a container's uid): leave it unset
			}
			own = &a
		}
		if k == "HOME" {
			vars[k] = own.home
		} else {
			vars[k] = own.name
		}
	}
	return nil
}

// Inherited lists the names of Caddy's environment among names: the
// variables env_inherit passes.
func Inherited(names []string) []string {
	var out []string
	for _, k := range names {
		if _, ok := os.LookupEnv(k); ok {
			out = append(out, k)
		}
	}
	return out
}

// CheckCommand refuses a command (what names it in the error) that no
// process can be started with: a NUL byte in its program or an argument
// would end it early (execve takes C strings), and Go's process start
// refuses it, so it would fail at every start instead of once, here.
func CheckCommand(what string, argv []string) error {
	for i, a := range argv {
		if strings.IndexByte(a, 0) >= 0 {
			if i == 0 {
				return fmt.Errorf("%s: the program's name holds a NUL byte, which no command can carry", what)
			}
			return fmt.Errorf("%s: argument %d holds a NUL byte, which no command can carry", what, i)
		}
	}
	return nil
}

// CheckEnvNames validates a list of variable names given to option.
func CheckEnvNames(option string, names []string) error {
	for _, k := range names {
		if !validEnvName(k) {
			return fmt.Errorf("%s: %q is not a variable name (letters, digits and _, not starting with a digit)", option, k)
		}
		if strings.HasPrefix(k, ReservedPrefix) {
			return reservedName(option, k)
		}
	}
	return nil
}
