package hearth

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "hearth",
		Usage: "<command>",
		Short: "Hearth's helpers for serving Python apps",
		Long: `Hearth's command-line helpers.

  caddy hearth status                     shows the running services (ports, hosts, pools, findings, DDNS)
  caddy hearth init [<dir>]               writes a Caddyfile for the Django, Flask or FastAPI project in <dir>
  caddy hearth manage <app> <args…>       runs the app's manage.py in its exact environment
  caddy hearth exec <app> -- <command…>   runs a command in the app's exact environment
  caddy hearth restart <app|service>      restarts an app's workers (to load changed code) or a service
  caddy hearth jobs [run <name>]          lists the scheduled jobs, or runs one now
  caddy hearth backup <name>              makes a backup of a SQLite database now
  caddy hearth restore <name> <file>      puts a backup back into its database
  caddy hearth check --config Caddyfile   runs every app's pre-launch checks and prints a report
  caddy hearth ports --config Caddyfile   prints the router forwarding and firewall rules the config needs
  caddy hearth systemd --config Caddyfile prints a hardened systemd unit for Caddy and every app
  caddy hearth secret-key                 prints a fresh random secret key (for SECRET_KEY)`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(checkCommand())
			cmd.AddCommand(statusCommand())
			cmd.AddCommand(restartCommand())
			cmd.AddCommand(jobsCommand())
			cmd.AddCommand(backupCommand())
			cmd.AddCommand(restoreCommand())
			for _, c := range moduleCommands {
				cmd.AddCommand(c())
			}
			cmd.AddCommand(portsCommand())
			cmd.AddCommand(systemdCommand())
			defer printableErrors(cmd)
			cmd.AddCommand(&cobra.Command{
				Use:   "secret-key",
				Short: "Prints a fresh random secret key",
				Long:  "Prints a secret key made of 50 random bytes (URL-safe base64), for SECRET_KEY in an env_file.",
				Args:  cobra.NoArgs,
				RunE: func(cmd *cobra.Command, _ []string) error {
					key, err := NewSecretKey()
					if err != nil {
						return err
					}
					_, err = fmt.Fprintln(cmd.OutOrStdout(), key)
					return err
				},
			})
		},
	})
}

// printableErrors makes the errors of c and its subcommands safe for a
// terminal: they may quote a config an app's account can write, or an
// app's output (a block named with an escape sequence would otherwise
// write the clipboard or retitle the operator's window).
func printableErrors(c *cobra.Command) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if err := run(cmd, args); err != nil {
				return errors.New(printableLines(err.Error()))
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		printableErrors(sub)
	}
}

// moduleCommands are the `caddy hearth` subcommands of other modules.
var moduleCommands []func() *cobra.Command

// RegisterCommand adds a `caddy hearth` subcommand from another module
// (call it from init).
func RegisterCommand(c func() *cobra.Command) { moduleCommands = append(moduleCommands, c) }

// LoadConfigFile reads a config file (a Caddyfile or JSON) as JSON,
// choosing the adapter exactly as `caddy run` does; configFile "" is
// ./Caddyfile.
func LoadConfigFile(configFile, adapterName string) ([]byte, error) {
	return adaptConfig(configFile, adapterName)
}

// NewSecretKey returns 50 bytes from the system's CSPRNG, base64url-encoded.
func NewSecretKey() (string, error) {
	b := make([]byte, 50)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
