package hearth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/hearth-dev/hearth/modules/internal/termsafe"
	"github.com/spf13/cobra"
)

// CheckedApp is one app in the report of `caddy hearth check`.
type CheckedApp struct {
	// Name is the app's name.
	Name string `json:"app"`
	// Dir is the app's directory.
	Dir string `json:"dir,omitempty"`
	// Settings is what `settings auto` or `settings overlay` gave the app
	// (nil without a settings option).
	Settings *AppSettings `json:"settings,omitempty"`
	// Findings are the pre-launch findings.
	Findings []CheckFinding `json:"findings"`
	// Error says why the app could not be checked.
	Error string `json:"error,omitempty"`
}

// HiddenValue stands for a secret in AppSettings.Set.
const HiddenValue = "(hidden)"

// AppSettings is what `settings auto` or `settings overlay` set for an app.
type AppSettings struct {
	// Mode is auto or overlay.
	Mode string `json:"mode"`
	// Module is, for overlay, the project's settings module it loaded.
	Module string `json:"module,omitempty"`
	// Set maps each setting (overlay) or environment variable (auto) that
	// Hearth set to its value; a secret key's is "(hidden)".
	Set map[string]any `json:"set"`
}

// CheckFinding is a finding with its effect under the app's guard mode.
type CheckFinding struct {
	ID       string `json:"id"`
	Severity string `json:"severity"`
	Blocks   bool   `json:"blocks"`
	Problem  string `json:"problem"`
	Fix      string `json:"fix"`
}

// Checker checks every app of a JSON config without starting anything.
// account is --user: the account to import apps as whose block names none.
type Checker func(config []byte, account string) ([]CheckedApp, error)

var checker Checker

// RegisterChecker installs the checker of the app modules.
func RegisterChecker(c Checker) { checker = c }

// check exit codes.
const (
	checkClean    = 0
	checkBlocking = 1
	checkFailed   = 2
)

func checkCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check --config <file> [--adapter <name>] [--json]",
		Short: "Runs every pre-launch check of every app, without starting anything",
		Long: `Runs the guard's pre-launch checks of every app of a config, in each app's
own environment, and prints a report. Exit code 0: no blocking finding; 1:
blocking findings; 2: the config or an app could not be checked.`,
		Args: cobra.NoArgs,
	}
	configFile := cmd.Flags().String("config", "", "the config to check (a Caddyfile or JSON)")
	adapter := cmd.Flags().String("adapter", "", "the config adapter (default: caddyfile for files named Caddyfile*)")
	asJSON := cmd.Flags().Bool("json", false, "print the report as JSON")
	account := cmd.Flags().String("user", "", "import the apps whose block names no user as this account (user or user:group); as root, required (`--user root` if Caddy runs them as root)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		code, err := runCheck(cmd.OutOrStdout(), *configFile, *adapter, *account, *asJSON)
		if err != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), "hearth check:", printableLines(err.Error()))
		}
		if code != checkClean {
			os.Exit(code)
		}
		return nil
	}
	return cmd
}

func runCheck(out io.Writer, configFile, adapterName, account string, asJSON bool) (int, error) {
	data, err := AdaptForCommand(configFile, adapterName, account, os.Stderr)
	if err != nil {
		return checkFailed, err
	}
	if checker == nil {
		return checkFailed, errors.New("no app module with checks is built in")
	}
	apps, err := checker(data, account)
	if err != nil {
		return checkFailed, err
	}
	cfg, err := ReadConfig(data)
	if err != nil {
		return checkFailed, err
	}
	roots := cfg.ServedRoots()
	refusals := configRefusals(cfg, roots, apps)
	notes := []string{}
	if cwd, err := os.Getwd(); err == nil && slices.Contains(roots, cwd) {
		notes = append(notes, fmt.Sprintf("a file_server that some request reaches with no root set serves Caddy's working directory: this check took it as %s, its own; run it from the directory Caddy runs in (a systemd unit's WorkingDirectory)", cwd))
	}
	code := checkClean
	if len(refusals) > 0 {
		code = checkBlocking
	}
	for _, a := range apps {
		if a.Error != "" {
			code = checkFailed
		}
		for _, f := range a.Findings {
			if f.Blocks && code == checkClean {
				code = checkBlocking
			}
		}
	}
	if asJSON {
		report, err := json.MarshalIndent(map[string]any{"apps": apps, "refusals": refusals, "notes": notes, "exit_code": code}, "", "  ")
		if err != nil {
			return code, err
		}
		return code, printJSON(out, report)
	}
	return code, writeCheckReport(out, apps, refusals, notes, code)
}

// configRefusals lists what in the config, beyond the apps' findings,
// would make Caddy refuse it when it loads it: a backup whose copies go
// to a directory file_server serves (relative directories and a
// file_server with no root are taken from this command's working
// directory, as Caddy started here would take them).
func configRefusals(cfg *ConfigFile, roots []string, apps []CheckedApp) []string {
	refusals := []string{}
	for _, b := range cfg.Apps.Hearth.Backups {
		dir := "" // Caddy's working directory
		if name := b.AppName(); name != "" {
			i := slices.IndexFunc(apps, func(a CheckedApp) bool { return a.Name == name })
			if i < 0 || apps[i].Dir == "" {
				continue // no such app, or its config is refused: the report says so
			}
			dir = apps[i].Dir
		}
		if !filepath.IsAbs(dir) {
			var err error
			if dir, err = filepath.Abs(dir); err != nil {
				continue
			}
		}
		if err := backupServed(b.Name, b.Destination(dir), roots); err != nil {
			refusals = append(refusals, err.Error())
		}
	}
	return refusals
}

// reportWidth is the width `caddy hearth check` wraps its report to.
const reportWidth = 80

// writeCheckReport prints the report for a terminal: per app, what its
// settings option set, then each finding with its id and effect, the
// problem and the fix, wrapped to reportWidth; then a summary.
func writeCheckReport(out io.Writer, apps []CheckedApp, refusals, notes []string, code int) error {
	var b strings.Builder
	blocking, warnings := 0, 0
	if len(refusals) > 0 {
		b.WriteString("CONFIG\n  would be refused when loaded:\n")
		for _, r := range refusals {
			b.WriteString(wrap("    ", r, "      "))
		}
		b.WriteString("\n")
	}
	for i, a := range apps {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "APP %s\n", printable(a.Name))
		if a.Settings != nil {
			names := make([]string, 0, len(a.Settings.Set))
			width := 0
			for name := range a.Settings.Set {
				names = append(names, name)
				width = max(width, len(name))
			}
			sort.Strings(names)
			head := "settings " + a.Settings.Mode + " set"
			if a.Settings.Module != "" {
				head = "settings overlay, over " + a.Settings.Module + ", set"
			}
			if len(names) == 0 {
				head += " nothing (the app's own settings are used)"
			}
			b.WriteString(wrap("  ", head+":", "  "))
			for _, name := range names {
				prefix := fmt.Sprintf("    %-*s  ", width, printable(name))
				value := pythonValue(a.Settings.Set[name])
				if a.Settings.Set[name] == HiddenValue {
					value = "(hidden; kept in Caddy's storage, never printed)"
				}
				b.WriteString(wrap(prefix, value, "        "))
			}
		}
		if a.Error != "" {
			b.WriteString("  could not check the app:\n")
			for _, line := range strings.Split(strings.TrimRight(a.Error, "\n"), "\n") {
				b.WriteString(wrap("    ", line, "      "))
			}
		}
		if a.Error == "" && len(a.Findings) == 0 {
			b.WriteString("  no findings\n")
		}
		for _, f := range a.Findings {
			if f.Blocks {
				blocking++
			} else {
				warnings++
			}
			fmt.Fprintf(&b, "  %s  %s\n", printable(f.ID), f.Severity)
			b.WriteString(wrap("    ", f.Problem, "    "))
			b.WriteString(wrap("    fix: ", f.Fix, "         "))
		}
	}
	b.WriteString("\n")
	for _, n := range notes {
		b.WriteString(wrap("note: ", n, "      "))
	}
	var summary string
	switch {
	case code == checkClean:
		summary = fmt.Sprintf("%d app(s) checked: nothing blocks them (%d warning(s)).", len(apps), warnings)
	case code == checkBlocking && len(refusals) > 0:
		summary = fmt.Sprintf("%d app(s) checked: the config would be refused (see CONFIG above)", len(apps))
		if blocking > 0 {
			summary += fmt.Sprintf(", and %d blocking finding(s) would refuse it too", blocking)
		}
		summary += "."
	case code == checkBlocking:
		summary = fmt.Sprintf("%d app(s) checked: %d blocking finding(s) would refuse the config; fix them, or acknowledge one with `guard enforce { allow <id> }`.", len(apps), blocking)
	default:
		summary = fmt.Sprintf("%d app(s) checked: some could not be checked (see above).", len(apps))
	}
	b.WriteString(wrap("", summary, ""))
	_, err := io.WriteString(out, b.String())
	return err
}

// wrap breaks text into lines of at most reportWidth columns at spaces:
// the first line starts with first, the others with rest. A word longer
// than a line (a path, a URL) gets a line of its own.
func wrap(first, text, rest string) string {
	text = printable(text)
	var b strings.Builder
	line := first
	empty := true
	for _, word := range strings.Fields(text) {
		switch {
		case !empty && len(line)+1+len(word) > reportWidth:
			b.WriteString(line + "\n")
			line, empty = rest, true
		case empty && line != rest && len(line)+len(word) > reportWidth && len(rest)+len(word) <= reportWidth:
			b.WriteString(strings.TrimRight(line, " ") + "\n") // a long first word fits the next line
			line = rest
		}
		if !empty {
			line += " "
		}
		line += word
		empty = false
	}
	b.WriteString(line + "\n")
	return b.String()
}

// printable replaces control characters (an escape sequence in an app's
// traceback or host name) with '?': the report goes to a terminal, maybe
// root's. Line breaks become spaces.
func printable(s string) string { return termsafe.Line(s) }

// terminalWriter writes what it is given with printableLines applied: a
// table's fields come from the admin API (names, states, a certificate
// issuer's name, …), which may quote anything; the admin reading them may
// be root. It goes under a tabwriter, which writes no tab (it pads with
// spaces).
type terminalWriter struct{ w io.Writer }

func (t terminalWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(t.w, printableLines(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// cells is args with every string made printable on one line: a table's
// cell with a tab or a line break would make columns or rows of its own.
func cells(args ...any) []any {
	for i, a := range args {
		if s, ok := a.(string); ok {
			args[i] = printable(s)
		}
	}
	return args
}

// printableLines is printable for text of several lines (a job's output):
// line breaks stay.
func printableLines(s string) string { return termsafe.Lines(s) }

// printJSON writes body, JSON for a user's terminal or a script, to out:
// what the admin API answered (which, when Caddy is not running, anything
// listening on its address may have written) or a report built here that
// quotes an app's output. It must be valid JSON; inside its strings, bytes
// that are not UTF-8 become U+FFFD, and DEL and the C1 controls, which
// JSON leaves as they are and a terminal may take for the start of an
// escape sequence, and the bidirectional controls, which reorder what it
// shows (an app's output could make a line read otherwise), are written
// as \u escapes. (JSON escapes the other
// control characters itself; outside strings it is ASCII.)
func printJSON(out io.Writer, body []byte) error {
	if !json.Valid(body) {
		return fmt.Errorf("the answer (%d bytes) is not JSON: is it Caddy's admin API that answered? (--address names another)", len(body))
	}
	s := strings.ToValidUTF8(string(body), "\uFFFD")
	var b strings.Builder
	b.Grow(len(s) + 1)
	for _, r := range s {
		if r == 0x7f || r >= 0x80 && r < 0xa0 || unicode.Is(unicode.Bidi_Control, r) { // bidi controls would reorder what the terminal shows
			fmt.Fprintf(&b, `\u%04x`, r)
			continue
		}
		b.WriteRune(r)
	}
	if !strings.HasSuffix(s, "\n") {
		b.WriteByte('\n')
	}
	_, err := io.WriteString(out, b.String())
	return err
}

// pythonValue writes a setting's value as Python would.
func pythonValue(v any) string {
	switch v := v.(type) {
	case bool:
		if v {
			return "True"
		}
		return "False"
	case string:
		return strconv.Quote(v)
	case []any:
		items := make([]string, len(v))
		for i, e := range v {
			items[i] = pythonValue(e)
		}
		return "[" + strings.Join(items, ", ") + "]"
	case nil:
		return "None"
	case float64: // JSON numbers
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}
