package hearth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// CheckedApp is one app in the report of `caddy hearth check`.
type CheckedApp struct {
	Name     string         `json:"app"`
	Findings []CheckFinding `json:"findings"`
	Error    string         `json:"error,omitempty"`
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
type Checker func(config []byte) ([]CheckedApp, error)

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
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		code, err := runCheck(cmd.OutOrStdout(), *configFile, *adapter, *asJSON)
		if err != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), "hearth check:", err)
		}
		if code != checkClean {
			os.Exit(code)
		}
		return nil
	}
	return cmd
}

func runCheck(out io.Writer, configFile, adapterName string, asJSON bool) (int, error) {
	data, err := adaptConfig(configFile, adapterName)
	if err != nil {
		return checkFailed, err
	}
	if checker == nil {
		return checkFailed, errors.New("no app module with checks is built in")
	}
	apps, err := checker(data)
	if err != nil {
		return checkFailed, err
	}
	code := checkClean
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
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return code, enc.Encode(map[string]any{"apps": apps, "exit_code": code})
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tID\tSEVERITY\tFINDING\tFIX")
	for _, a := range apps {
		if a.Error != "" {
			fmt.Fprintf(tw, "%s\t-\tcould not check\t%s\t\n", a.Name, strings.ReplaceAll(a.Error, "\n", " | "))
		}
		if a.Error == "" && len(a.Findings) == 0 {
			fmt.Fprintf(tw, "%s\t-\tclean\tno findings\t\n", a.Name)
		}
		for _, f := range a.Findings {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.Name, f.ID, f.Severity, f.Problem, f.Fix)
		}
	}
	return code, tw.Flush()
}
