package hearth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// restartCommand is `caddy hearth restart <app>`: a rolling restart of the
// app's workers in the running Caddy, so that they load changed code. A
// changed Caddyfile is `caddy reload`'s.
func restartCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restart <app> [--address <admin address>]",
		Short: "Restarts an app's workers in the running Caddy, to load changed code",
		Long: `Restarts the workers of the app in the running Caddy, one at a time: each new
worker is ready before an old one stops, so no request is lost. Use it after
changing the app's code; after changing the Caddyfile, use caddy reload.`,
		Args: cobra.ExactArgs(1),
	}
	address := cmd.Flags().String("address", "", addressFlagHelp)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		addr, err := caddycmd.DetermineAdminAPIAddress(*address, nil, "", "")
		if err != nil {
			return err
		}
		name := args[0]
		body, err := adminCall(addr, http.MethodPost, "/hearth/apps/"+url.PathEscape(name)+"/restart")
		if err != nil {
			return fmt.Errorf("restarting %s: %w", name, err)
		}
		var answer struct {
			Apps []struct {
				Workers []json.RawMessage `json:"workers"`
			} `json:"apps"`
		}
		if err := json.Unmarshal(body, &answer); err != nil {
			return fmt.Errorf("reading the answer: %w", err)
		}
		workers := 0
		for _, a := range answer.Apps {
			workers += len(a.Workers)
		}
		_, err = fmt.Fprintf(cmd.OutOrStdout(), "restarted %s: %d worker(s) now run its current code\n", name, workers)
		return err
	}
	return cmd
}

// adminCall makes a request of the running Caddy's admin API at addr and
// returns the answer's body; its error says whether Caddy could not be
// reached (and what to check) or what Caddy answered.
func adminCall(addr, method, path string) ([]byte, error) {
	// bounded: whatever answers on the admin address (any local account
	// can listen there while Caddy is down) must not hold the command
	// forever; a POST waits for what it does (a restart, a restore)
	wait := adminReadWait
	if method != http.MethodGet {
		wait = adminActWait
	}
	type answer struct {
		body []byte
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		body, err := adminRequest(addr, method, path)
		done <- answer{body, err}
	}()
	select {
	case a := <-done:
		return a.body, a.err
	case <-time.After(wait):
		return nil, fmt.Errorf("no answer from Caddy's admin API at %s within %s: is what listens there the running Caddy? (use --address)", addr, wait)
	}
}

// How long an admin API request may take: one that reads, and one that
// acts (a restart waits for the new workers, a restore for the copy).
var (
	adminReadWait = 15 * time.Second
	adminActWait  = 15 * time.Minute
)

// adminRequest is adminCall's request.
func adminRequest(addr, method, path string) ([]byte, error) {
	resp, err := caddycmd.AdminAPIRequest(addr, method, path, nil, nil)
	if err != nil {
		if _, answer, ok := strings.Cut(err.Error(), "caddy responded with error: "); ok {
			if _, body, ok := strings.Cut(answer, ": "); ok {
				var e struct {
					Error string `json:"error"`
				}
				if json.Unmarshal([]byte(body), &e) == nil && e.Error != "" {
					// it may quote an app's output (a failed restore), and
					// goes to a terminal
					return nil, errors.New(printableLines(e.Error))
				}
			}
			return nil, errors.New(printableLines(answer))
		}
		return nil, fmt.Errorf("no answer from a running Caddy at %s (is `caddy run` going? is its admin API elsewhere? use --address): %w", addr, err)
	}
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, 16<<20))
}
