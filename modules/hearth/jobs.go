package hearth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/termsafe"
	"github.com/hearth-dev/hearth/modules/job"
	"github.com/hearth-dev/hearth/modules/service"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// jobs holds the jobs of every loaded config, kept across reloads by
// their spec's hash like the pools (an unchanged job keeps its schedule).
var jobs = caddy.NewUsagePool()

// checkNamed validates the configs of one kind, services, jobs or backups
// (Provision: `caddy validate` runs it): each on its own, and their names
// unique. kinds is the plural ("jobs"); empty says what a missing config
// lacks.
func checkNamed[C any](kinds string, configs []*C, empty string, check func(*C) error, name func(*C) string) error {
	seen := map[string]bool{}
	for _, c := range configs {
		if c == nil {
			return fmt.Errorf("%s: %s", kinds, empty)
		}
		if err := check(c); err != nil {
			return err
		}
		if seen[name(c)] {
			return fmt.Errorf("two %s are named %s; give each its own name", kinds, name(c))
		}
		seen[name(c)] = true
	}
	return nil
}

// DjangoProject is an app that can name its Django settings module (for
// a backup of one of its DATABASES).
type DjangoProject interface {
	SettingsModule() (string, error)
}

// startJobs schedules the config's jobs and backups once its apps run (a
// job may run in an app's environment).
func (a *App) startJobs() error {
	var specs []*job.Spec
	var roots []string // what file_server serves: no backup may go there
	if len(a.Backups) > 0 {
		roots = a.configRoots()
	}
	for _, c := range a.Backups {
		var app *supervisor.Command
		module := ""
		if name := c.AppName(); name != "" {
			env, err := a.appEnvironment("backup "+c.Name, name)
			if err != nil {
				return err
			}
			cmd, err := env.Environment()
			if err != nil {
				return fmt.Errorf("backup %s: the environment of app %s: %w", c.Name, name, err)
			}
			app = &cmd
			if project, ok := env.(DjangoProject); ok && c.Database != "" {
				if module, err = project.SettingsModule(); err != nil {
					return fmt.Errorf("backup %s: %w", c.Name, err)
				}
			}
		}
		spec, err := c.ResolveBackup(app, module)
		if err != nil {
			return err
		}
		if err := backupServed(c.Name, spec.Backup.To, roots); err != nil {
			return err
		}
		specs = append(specs, spec)
	}
	for _, spec := range specs {
		if err := a.startJob(spec); err != nil {
			return err
		}
	}
	for _, c := range a.Jobs {
		var spec *job.Spec
		var err error
		if c.App == "" {
			spec, err = c.Resolve(nil)
		} else {
			var env AppEnvironment
			if env, err = a.appEnvironment("job "+c.Name, c.App); err == nil {
				cmd, envErr := env.Environment()
				if envErr != nil {
					return fmt.Errorf("job %s: the environment of app %s: %w", c.Name, c.App, envErr)
				}
				spec, err = c.Resolve(&cmd)
			}
		}
		if err != nil {
			return err
		}
		if err := a.startJob(spec); err != nil {
			return err
		}
	}
	return nil
}

// startJob takes the job of spec for this config and starts its schedule.
func (a *App) startJob(spec *job.Spec) error {
	if spec.App == "" { // in an app's environment, the app's checks (HG-ADMIN-01) judge its account
		if err := CheckAdminReach(string(spec.Kind)+" "+spec.Name, spec.Credential); err != nil {
			return err
		}
		WarnIfRoot(a.logger, string(spec.Kind)+" "+spec.Name, spec.Credential)
	}
	key := PoolKey("job", spec)
	v, _, err := jobs.LoadOrNew(key, func() (caddy.Destructor, error) { return job.New(spec, a.logger), nil })
	if err != nil {
		return err
	}
	a.jobKeys = append(a.jobKeys, key)
	return v.(*job.Job).Start()
}

// releaseJobs gives back what startJobs took (Cleanup).
func (a *App) releaseJobs() {
	for _, key := range a.jobKeys {
		_, _ = jobs.Delete(key)
	}
	a.jobKeys = nil
}

// currentJobs is every scheduled job of a kind by name (during a reload,
// the newest where two configs have one).
func currentJobs(kind job.Kind) map[string]*job.Job {
	found := map[string]*job.Job{}
	jobs.Range(func(_, v any) bool {
		j := v.(*job.Job)
		if prev := found[j.Name()]; j.Kind() == kind && j.Scheduled() && (prev == nil || j.Generation() > prev.Generation()) {
			found[j.Name()] = j
		}
		return true
	})
	return found
}

// jobStatuses are the statuses of the jobs of a kind, by name.
func jobStatuses(kind job.Kind) []job.Status {
	list := []job.Status{}
	for _, j := range currentJobs(kind) {
		list = append(list, j.Status())
	}
	sort.Slice(list, func(i, k int) bool { return list[i].Name < list[k].Name })
	return list
}

// serveJobs serves GET /hearth/jobs, GET /hearth/jobs/{name} and
// POST /hearth/jobs/{name}/run, and the same under /hearth/backups.
func serveJobs(w http.ResponseWriter, r *http.Request, kind job.Kind, parts []string) error {
	list := string(kind) + "s"
	switch {
	case len(parts) == 0:
		if err := requireMethod(r, http.MethodGet); err != nil {
			return err
		}
		return writeJSON(w, map[string]any{list: jobStatuses(kind)})
	case kind == job.KindBackup && len(parts) == 2 && parts[1] == "restore":
		return restoreBackup(w, r, parts[0])
	case len(parts) == 1 || len(parts) == 2 && parts[1] == "run":
		j, ok := currentJobs(kind)[parts[0]]
		if !ok {
			return caddy.APIError{HTTPStatus: http.StatusNotFound,
				Err: fmt.Errorf("no %s named %q; GET /hearth/%s lists them", kind, parts[0], list)}
		}
		if len(parts) == 1 {
			if err := requireMethod(r, http.MethodGet); err != nil {
				return err
			}
			return writeJSON(w, j.Status())
		}
		if err := requireMethod(r, http.MethodPost); err != nil {
			return err
		}
		id, err := j.RunNow()
		if errors.Is(err, job.ErrRunning) || errors.Is(err, job.ErrClosed) || errors.Is(err, job.ErrHeld) {
			return caddy.APIError{HTTPStatus: http.StatusConflict, Err: fmt.Errorf("%s %s: %w", kind, parts[0], err)}
		}
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		return json.NewEncoder(w).Encode(map[string]any{string(kind): parts[0], "run": id})
	}
	restoreRoute := ""
	if kind == job.KindBackup {
		restoreRoute = ", POST /hearth/backups/{name}/restore?file=<copy>"
	}
	return caddy.APIError{HTTPStatus: http.StatusNotFound,
		Err: fmt.Errorf("unknown route %s; the routes are GET /hearth/%s, GET /hearth/%s/{name}, POST /hearth/%s/{name}/run%s", r.URL.Path, list, list, list, restoreRoute)}
}

// Metrics of the jobs.
var (
	jobRunsDesc        = prometheus.NewDesc("hearth_job_runs_total", "Runs of a job that ended.", []string{"job"}, nil)
	jobFailuresDesc    = prometheus.NewDesc("hearth_job_failures_total", "Runs of a job that failed or timed out.", []string{"job"}, nil)
	jobSkippedDesc     = prometheus.NewDesc("hearth_job_skipped_total", "Scheduled runs of a job skipped because the previous one was still going.", []string{"job"}, nil)
	jobLastSuccessDesc = prometheus.NewDesc("hearth_job_last_success_timestamp_seconds", "When a run of the job last succeeded (Unix time; 0: never).", []string{"job"}, nil)
	jobRunningDesc     = prometheus.NewDesc("hearth_job_running", "1 while a run of the job is going.", []string{"job"}, nil)
)

// jobCollector exposes the jobs' metrics.
type jobCollector struct{}

// Describe implements prometheus.Collector.
func (jobCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{jobRunsDesc, jobFailuresDesc, jobSkippedDesc, jobLastSuccessDesc, jobRunningDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (jobCollector) Collect(ch chan<- prometheus.Metric) {
	all := currentJobs(job.KindJob)
	for name, b := range currentJobs(job.KindBackup) {
		all["backup:"+name] = b // a backup's runs, under a name no job can have
	}
	for name, j := range all {
		runs, failures, skipped, lastSuccess, running := j.Metrics()
		last, on := 0.0, 0.0
		if !lastSuccess.IsZero() {
			last = float64(lastSuccess.UnixNano()) / 1e9
		}
		if running {
			on = 1
		}
		ch <- prometheus.MustNewConstMetric(jobRunsDesc, prometheus.CounterValue, float64(runs), name)
		ch <- prometheus.MustNewConstMetric(jobFailuresDesc, prometheus.CounterValue, float64(failures), name)
		ch <- prometheus.MustNewConstMetric(jobSkippedDesc, prometheus.CounterValue, float64(skipped), name)
		ch <- prometheus.MustNewConstMetric(jobLastSuccessDesc, prometheus.GaugeValue, last, name)
		ch <- prometheus.MustNewConstMetric(jobRunningDesc, prometheus.GaugeValue, on, name)
	}
}

// jobsCommand is `caddy hearth jobs [run <name>]`: the jobs of the
// running Caddy as a table, or one run now, waited for.
func jobsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "jobs [run <name>] [--address <admin address>] [--json]",
		Short: "Lists the scheduled jobs of the running Caddy, or runs one now",
		Long: `Without arguments, lists the jobs of the running Caddy: schedule, next run,
the last run's result, runs, failures and skipped runs. With run <name>,
runs the job now, waits for it to end, prints its result and the tail of its
output, and exits with 1 if it failed.`,
		Args: cobra.MaximumNArgs(2),
	}
	address := cmd.Flags().String("address", "", addressFlagHelp)
	asJSON := cmd.Flags().Bool("json", false, "print JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		addr, err := caddycmd.DetermineAdminAPIAddress(*address, nil, "", "")
		if err != nil {
			return err
		}
		switch {
		case len(args) == 0:
			body, err := adminCall(addr, http.MethodGet, "/hearth/jobs")
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(cmd.OutOrStdout(), body)
			}
			var list struct {
				Jobs []job.Status `json:"jobs"`
			}
			if err := json.Unmarshal(body, &list); err != nil {
				return fmt.Errorf("reading the answer: %w", err)
			}
			return printJobs(cmd.OutOrStdout(), list.Jobs)
		case len(args) == 2 && args[0] == "run":
			return runJob(cmd, addr, "jobs", args[1], *asJSON)
		}
		return fmt.Errorf("usage: caddy hearth jobs [run <name>]")
	}
	return cmd
}

// printJobs prints the jobs as a table.
func printJobs(out io.Writer, list []job.Status) error {
	if len(list) == 0 {
		_, err := fmt.Fprintln(out, "The running config has no job.")
		return err
	}
	tw := tabwriter.NewWriter(terminalWriter{out}, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tSCHEDULE\tNEXT RUN\tLAST RESULT\tRUNS\tFAILURES\tSKIPPED\tLAST SUCCESS")
	for _, j := range list {
		next, last, success := "-", string(j.LastResult), "never"
		if j.NextRun != nil {
			next = j.NextRun.Local().Format("2006-01-02 15:04:05")
		}
		if j.Running {
			last = "running"
		}
		if last == "" {
			last = "-"
		}
		if j.LastSuccess != nil {
			success = j.LastSuccess.Local().Format("2006-01-02 15:04:05")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", cells(j.Name, j.Schedule, next, last, j.Runs, j.Failures, j.Skipped, success)...)
	}
	return tw.Flush()
}

// runJob starts a run of the job (under list: jobs or backups), waits
// for its end and prints it.
func runJob(cmd *cobra.Command, addr, list, name string, asJSON bool) error {
	what := strings.TrimSuffix(list, "s")
	var body []byte
	var err error
	for waited := time.Duration(0); ; waited += 250 * time.Millisecond {
		body, err = adminCall(addr, http.MethodPost, "/hearth/"+list+"/"+url.PathEscape(name)+"/run")
		if err == nil || !strings.Contains(err.Error(), job.ErrRunning.Error()) || waited > 10*time.Minute {
			break
		}
		if waited == 0 {
			fmt.Fprintf(cmd.ErrOrStderr(), "%s %s is running now (on its schedule); waiting for that run to end…\n", what, name)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	var started struct {
		Run int64 `json:"run"`
	}
	if err := json.Unmarshal(body, &started); err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	// bounded, as each request is: Caddy ends a run at its timeout, so a
	// run listed as running well past it is not Caddy's (any local account
	// can listen on the admin address while Caddy is down)
	var deadline time.Time
	for {
		body, err := adminCall(addr, http.MethodGet, "/hearth/"+list+"/"+url.PathEscape(name))
		if err != nil {
			return err
		}
		var st job.Status
		if err := json.Unmarshal(body, &st); err != nil {
			return fmt.Errorf("reading the answer: %w", err)
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(runWait(st.Timeout))
		}
		i := slices.IndexFunc(st.Recent, func(r job.Run) bool { return r.ID == started.Run })
		if i < 0 {
			return fmt.Errorf("run %d of %s %s is no longer listed (more than 20 runs since?)", started.Run, what, name)
		}
		r := st.Recent[i]
		if r.Result != job.Running {
			if asJSON {
				out, err := json.MarshalIndent(r, "", "  ")
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s, run %d: %s (%s) after %.1fs\n", what, name, r.ID, printable(string(r.Result)), printable(r.Exit), r.Duration)
			if r.Output != "" {
				// the app's output, to a terminal (maybe root's): no escape sequence
				fmt.Fprintf(cmd.OutOrStdout(), "--- output (tail) ---\n%s", printableLines(r.Output))
				if !strings.HasSuffix(r.Output, "\n") {
					fmt.Fprintln(cmd.OutOrStdout())
				}
			}
			if r.Result != job.OK {
				return fmt.Errorf("%s %s failed: %s", what, name, printable(r.Exit))
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("run %d of %s %s is still listed as running after %s of waiting, past its timeout (%.0fs), when Caddy would have ended it: stopped waiting; is what answers at %s the running Caddy? (`caddy hearth jobs` shows the run)",
				started.Run, what, name, runWait(st.Timeout).Round(time.Second), st.Timeout, addr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// runWait is how long runJob waits for a run whose timeout is the given
// seconds (an answer's: bounded however large it says, and the job's
// default when it says none), with a margin for its end to be recorded.
func runWait(timeoutSeconds float64) time.Duration {
	timeout := job.DefaultTimeout
	if timeoutSeconds > 0 && timeoutSeconds < maxRunWait.Seconds() {
		timeout = time.Duration(timeoutSeconds * float64(time.Second))
	} else if timeoutSeconds >= maxRunWait.Seconds() {
		timeout = maxRunWait
	}
	return timeout + runWaitMargin
}

// The bounds of runWait: a run Caddy ends at its timeout is recorded as
// ended within the margin (its group killed, its output read).
var (
	maxRunWait    = 24 * time.Hour // (the answer says the timeout: what answers may not be Caddy)
	runWaitMargin = time.Minute
)

// backupCommand is `caddy hearth backup <name>`: a copy now, waited for.
func backupCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup <name> [--address <admin address>] [--json]",
		Short: "Makes a backup of a SQLite database now, in the running Caddy",
		Long: `Runs the backup block <name> of the running Caddy now: an online copy of the
database through SQLite's backup API, checked with PRAGMA integrity_check,
renamed into its directory, the oldest beyond keep removed. Prints the
result and exits with 1 if it failed.`,
		Args: cobra.ExactArgs(1),
	}
	address := cmd.Flags().String("address", "", addressFlagHelp)
	asJSON := cmd.Flags().Bool("json", false, "print JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		addr, err := caddycmd.DetermineAdminAPIAddress(*address, nil, "", "")
		if err != nil {
			return err
		}
		return runJob(cmd, addr, "backups", args[0], *asJSON)
	}
	return cmd
}

// Pausable is a pool that can hold its requests while its data is
// replaced (a restore).
type Pausable interface {
	Pause(ctx context.Context) error
	Resume()
	// Starting reports whether the pool is starting: its before_start
	// (migrations) may be changing the database.
	Starting() bool
}

// restorePause bounds how long a restore waits for the app's requests in
// flight to end.
const restorePause = time.Minute

// restoring holds the apps (and backups without one) a restore is under
// way for.
var restoring sync.Map

// restoreBackup serves POST /hearth/backups/{name}/restore?file=<copy>:
// with the app's requests held (they wait in its queue) once none runs,
// it puts the copy back into the database (the current one copied aside
// first), replaces the app's workers (so that none keeps what it read
// before), and lets the requests go on.
func restoreBackup(w http.ResponseWriter, r *http.Request, name string) error {
	if err := requireMethod(r, http.MethodPost); err != nil {
		return err
	}
	file := r.URL.Query().Get("file")
	if file == "" || !filepath.IsAbs(file) {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("give the copy to restore as ?file=<absolute path>, like one `caddy hearth backup %s` made", name)}
	}
	b, ok := currentJobs(job.KindBackup)[name]
	if !ok {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no backup named %q; GET /hearth/backups lists them", name)}
	}
	st := b.Status()
	app := st.App
	// checked before the app is held: a copy this backup's directory holds
	// (a file of its own there, not a link), never any file of the machine
	file = filepath.Clean(file)
	if st.Backup == nil || filepath.Dir(file) != filepath.Clean(st.Backup.To) {
		to := ""
		if st.Backup != nil {
			to = st.Backup.To
		}
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("a restore takes a copy in backup %s's directory %s; %s is not there (copy it there first)", name, to, file)}
	}
	if made, ok := job.CopyTime(name, filepath.Base(file)); ok && made.After(time.Now().Add(time.Minute)) {
		// Hearth names a copy by the time it makes it, and keeps those
		// named later than now through `keep` (made while the clock was
		// ahead): one planted there sorts as the newest copy
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("%s is named as made at %s, later than now: a copy Hearth made then was made while the clock was ahead, or someone else put it there (an older Hearth made the backup directory the app's account's); check what it holds, and rename it (not as a copy of %s) to restore it anyway", file, made.UTC().Format(time.RFC3339), name)}
	}
	// opened now, in the backup directory, without following a link: a
	// copy refused is refused before anything of the app is held
	copy, err := b.OpenCopy(file)
	if errors.Is(err, fs.ErrNotExist) {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no copy %s to restore; `caddy hearth jobs` shows each backup's newest copy", file)}
	}
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	handed := false
	defer func() {
		if !handed {
			copy.Close()
		}
	}()
	// one restore at a time per app (per backup without one): a second
	// one's refusal must not let go of requests the first holds
	key := "backup " + name
	if app != "" {
		key = "app " + app
	}
	if _, busy := restoring.LoadOrStore(key, true); busy {
		return caddy.APIError{HTTPStatus: http.StatusConflict, Err: fmt.Errorf("a restore of %s is in progress; wait for it to end (GET /hearth/backups/%s)", strings.TrimPrefix(strings.TrimPrefix(key, "app "), "backup "), name)}
	}
	defer restoring.Delete(key)
	var held []Pool
	var stopped []*service.Group // the app's services, stopped meanwhile
	revived := false
	if app != "" {
		// the app's jobs start no run meanwhile, and none may be running:
		// what one wrote between the copy aside and the restore would be
		// in neither
		release, running := job.HoldApp(app)
		defer release()
		if len(running) > 0 {
			return caddy.APIError{HTTPStatus: http.StatusConflict,
				Err: fmt.Errorf("%s of app %s is running (it may be writing to the database); nothing was restored: restore once it has ended (GET /hearth/jobs and /hearth/backups show it)", strings.Join(running, ", "), app)}
		}
		// (refused before anything is stopped)
		all, _ := poolsNamed(app, false)
		for _, p := range all {
			if pausable, ok := p.(Pausable); ok && pausable.Starting() {
				return caddy.APIError{HTTPStatus: http.StatusConflict,
					Err: fmt.Errorf("app %s is starting (its before_start may be changing the database); nothing was restored: restore once it runs (GET /hearth/apps/%s shows its state), or when it has failed", app, app)}
			}
		}
		// and its services (a Celery worker) are stopped, their running
		// tasks finished within their stop_timeout, and started again
		// once the copy is in
		stopped = stopServicesOf(app)
		defer func() {
			if !revived { // (a restore that failed, or was refused)
				if err := reviveServicesOf(stopped); err != nil {
					caddy.Log().Error("after a restore that did not complete", zap.Error(err))
				}
			}
		}()
		pools, _ := poolsNamed(app, true)
		for _, p := range pools {
			pausable, ok := p.(Pausable)
			if !ok {
				continue
			}
			ctx, cancel := context.WithTimeout(r.Context(), restorePause)
			err := pausable.Pause(ctx)
			cancel()
			held = append(held, p)
			if err != nil {
				resume(held)
				return caddy.APIError{HTTPStatus: http.StatusConflict,
					Err: fmt.Errorf("app %s could not be held for the restore within %s (%w); nothing was restored", app, restorePause, err)}
			}
		}
	}
	defer resume(held)
	handed = true
	id, err := b.Restore(copy)
	if errors.Is(err, job.ErrRunning) {
		return caddy.APIError{HTTPStatus: http.StatusConflict, Err: fmt.Errorf("backup %s: a backup or restore is running; try again when it ends", name)}
	}
	if errors.Is(err, job.ErrClosed) {
		return caddy.APIError{HTTPStatus: http.StatusConflict, Err: fmt.Errorf("backup %s: %w", name, err)}
	}
	if err != nil {
		return err
	}
	// Followed to its end whether or not the client stays (a Ctrl-C of
	// `caddy hearth restore`): the app's requests stay held until the
	// database is replaced and its workers restarted. The run's own
	// timeout bounds the wait.
	for {
		run, ok := b.Run(id)
		if !ok {
			return fmt.Errorf("the restore's run %d is no longer listed", id)
		}
		if run.Result == job.Running {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if run.Result != job.OK {
			return caddy.APIError{HTTPStatus: http.StatusInternalServerError,
				Err: fmt.Errorf("restoring %s failed (%s): %s", name, run.Exit, termsafe.Lines(strings.TrimSpace(run.Output)))}
		}
		answer := map[string]any{"backup": name, "run": run}
		for _, p := range held {
			if err := p.Restart(); err != nil {
				return caddy.APIError{HTTPStatus: http.StatusInternalServerError,
					Err: fmt.Errorf("the copy is restored, but restarting app %s's workers failed: %w; run `caddy hearth restart %s`", app, err, app)}
			}
			answer["restarted"] = app
		}
		revived = true
		if err := reviveServicesOf(stopped); err != nil {
			return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
		}
		return writeJSON(w, answer)
	}
}

// stopServicesOf stops the running services of app (in its environment)
// for a restore of its database, and returns them.
func stopServicesOf(app string) []*service.Group {
	var stopped []*service.Group
	for _, p := range Pools() {
		if g, ok := p.(*service.Group); ok && g.App() == app && g.Running() {
			g.Stop()
			stopped = append(stopped, g)
		}
	}
	return stopped
}

// reviveServicesOf starts again the services stopServicesOf stopped, those
// the running config still has (a reload during the restore may not start
// them anew: startServices).
func reviveServicesOf(stopped []*service.Group) error {
	var errs []error
	for _, g := range stopped {
		if !inPools(g) {
			continue
		}
		if err := g.Revive(); err != nil {
			errs = append(errs, fmt.Errorf("the copy is restored, but service %s did not start again: %w; reload the config to start it", g.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// resume lets the held pools' requests go on.
func resume(held []Pool) {
	for _, p := range held {
		p.(Pausable).Resume()
	}
}

// restoreCommand is `caddy hearth restore <name> <file>`.
func restoreCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restore <name> <file> [--address <admin address>]",
		Short: "Puts a backup of a SQLite database back, in the running Caddy",
		Long: `Puts the copy <file> (one that backup <name> made) back into its database in the
running Caddy: the copy must pass PRAGMA integrity_check; the app's new requests
wait in its queue until none runs; the current database is first copied aside
into the backup's directory (<name>-before-restore-<time>); the copy is written
in with SQLite's backup API; the app's workers are replaced; then the waiting
requests go on.`,
		Args: cobra.ExactArgs(2),
	}
	address := cmd.Flags().String("address", "", addressFlagHelp)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		addr, err := caddycmd.DetermineAdminAPIAddress(*address, nil, "", "")
		if err != nil {
			return err
		}
		file, err := filepath.Abs(args[1])
		if err != nil {
			return err
		}
		var body []byte
		for waited := time.Duration(0); ; waited += 250 * time.Millisecond {
			body, err = adminCall(addr, http.MethodPost, "/hearth/backups/"+url.PathEscape(args[0])+"/restore?file="+url.QueryEscape(file))
			if err == nil || !strings.Contains(err.Error(), "a backup or restore is running") || waited > 10*time.Minute {
				break
			}
			if waited == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "backup %s is running now (on its schedule); waiting for it to end…\n", args[0])
			}
			time.Sleep(250 * time.Millisecond)
		}
		if err != nil {
			return err
		}
		var answer struct {
			Run       job.Run `json:"run"`
			Restarted string  `json:"restarted"`
		}
		if err := json.Unmarshal(body, &answer); err != nil {
			return fmt.Errorf("reading the answer: %w", err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "restored %s into backup %s's database: %s\n", file, args[0], printableLines(strings.TrimSpace(answer.Run.Output)))
		if answer.Restarted != "" {
			fmt.Fprintf(cmd.OutOrStdout(), "restarted app %s's workers\n", printable(answer.Restarted))
		}
		return nil
	}
	return cmd
}

// configRoots lists the directories file_server serves anywhere in this
// config.
func (a *App) configRoots() []string {
	httpApp, err := a.ctx.AppIfConfigured("http")
	if err != nil {
		return nil
	}
	h, ok := httpApp.(*caddyhttp.App)
	if !ok {
		return nil
	}
	return allServedRoots(h)
}
