package hearth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/hearth-dev/hearth/modules/job"
)

// jobs holds the jobs of every loaded config, kept across reloads by
// their spec's hash like the pools (an unchanged job keeps its schedule).
var jobs = caddy.NewUsagePool()

// checkJobs validates the jobs' configs (Provision).
func (a *App) checkJobs() error {
	seen := map[string]bool{}
	for _, c := range a.Jobs {
		if c == nil {
			return fmt.Errorf("jobs: an empty job; each needs a name, a command and a schedule")
		}
		if err := c.Check(); err != nil {
			return err
		}
		if seen[c.Name] {
			return fmt.Errorf("two jobs are named %s; give each its own name", c.Name)
		}
		seen[c.Name] = true
	}
	return nil
}

// startJobs schedules the config's jobs once its apps run (a job may run
// in an app's environment).
func (a *App) startJobs() error {
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
		key := PoolKey("job", spec)
		v, _, err := jobs.LoadOrNew(key, func() (caddy.Destructor, error) { return job.New(spec, a.logger), nil })
		if err != nil {
			return err
		}
		a.jobKeys = append(a.jobKeys, key)
		if err := v.(*job.Job).Start(); err != nil {
			return err
		}
	}
	return nil
}

// releaseJobs gives back what startJobs took (Cleanup).
func (a *App) releaseJobs() {
	for _, key := range a.jobKeys {
		_, _ = jobs.Delete(key)
	}
	a.jobKeys = nil
}

// currentJobs is every scheduled job by name (during a reload, the
// newest where two configs have one).
func currentJobs() map[string]*job.Job {
	found := map[string]*job.Job{}
	jobs.Range(func(_, v any) bool {
		j := v.(*job.Job)
		if prev := found[j.Name()]; j.Scheduled() && (prev == nil || j.Generation() > prev.Generation()) {
			found[j.Name()] = j
		}
		return true
	})
	return found
}

// jobStatuses are the jobs' statuses, by name.
func jobStatuses() []job.Status {
	list := []job.Status{}
	for _, j := range currentJobs() {
		list = append(list, j.Status())
	}
	sort.Slice(list, func(i, k int) bool { return list[i].Name < list[k].Name })
	return list
}

// serveJobs serves GET /hearth/jobs, GET /hearth/jobs/{name} and
// POST /hearth/jobs/{name}/run.
func serveJobs(w http.ResponseWriter, r *http.Request, parts []string) error {
	switch {
	case len(parts) == 0:
		if err := requireMethod(r, http.MethodGet); err != nil {
			return err
		}
		return writeJSON(w, map[string]any{"jobs": jobStatuses()})
	case len(parts) == 1 || len(parts) == 2 && parts[1] == "run":
		j, ok := currentJobs()[parts[0]]
		if !ok {
			return caddy.APIError{HTTPStatus: http.StatusNotFound,
				Err: fmt.Errorf("no job named %q; GET /hearth/jobs lists them", parts[0])}
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
		if errors.Is(err, job.ErrRunning) {
			return caddy.APIError{HTTPStatus: http.StatusConflict, Err: fmt.Errorf("job %s: %w", parts[0], err)}
		}
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		return json.NewEncoder(w).Encode(map[string]any{"job": parts[0], "run": id})
	}
	return caddy.APIError{HTTPStatus: http.StatusNotFound,
		Err: fmt.Errorf("unknown route %s; the job routes are GET /hearth/jobs, GET /hearth/jobs/{name}, POST /hearth/jobs/{name}/run", r.URL.Path)}
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
	for name, j := range currentJobs() {
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
	address := cmd.Flags().String("address", "", "the admin API address (default: from the config, or localhost:2019)")
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
				_, err := cmd.OutOrStdout().Write(body)
				return err
			}
			var list struct {
				Jobs []job.Status `json:"jobs"`
			}
			if err := json.Unmarshal(body, &list); err != nil {
				return fmt.Errorf("reading the answer: %w", err)
			}
			return printJobs(cmd.OutOrStdout(), list.Jobs)
		case len(args) == 2 && args[0] == "run":
			return runJob(cmd, addr, args[1], *asJSON)
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
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", j.Name, j.Schedule, next, last, j.Runs, j.Failures, j.Skipped, success)
	}
	return tw.Flush()
}

// runJob starts a run of the job, waits for its end and prints it.
func runJob(cmd *cobra.Command, addr, name string, asJSON bool) error {
	body, err := adminCall(addr, http.MethodPost, "/hearth/jobs/"+url.PathEscape(name)+"/run")
	if err != nil {
		return err
	}
	var started struct {
		Run int64 `json:"run"`
	}
	if err := json.Unmarshal(body, &started); err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	for {
		body, err := adminCall(addr, http.MethodGet, "/hearth/jobs/"+url.PathEscape(name))
		if err != nil {
			return err
		}
		var st job.Status
		if err := json.Unmarshal(body, &st); err != nil {
			return fmt.Errorf("reading the answer: %w", err)
		}
		i := slices.IndexFunc(st.Recent, func(r job.Run) bool { return r.ID == started.Run })
		if i < 0 {
			return fmt.Errorf("run %d of job %s is no longer listed (more than 20 runs since?)", started.Run, name)
		}
		r := st.Recent[i]
		if r.Result != job.Running {
			if asJSON {
				out, _ := json.MarshalIndent(r, "", "  ")
				_, err := fmt.Fprintln(cmd.OutOrStdout(), string(out))
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "job %s, run %d: %s (%s) after %.1fs\n", name, r.ID, r.Result, r.Exit, r.Duration)
			if r.Output != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "--- output (tail) ---\n%s", r.Output)
				if !strings.HasSuffix(r.Output, "\n") {
					fmt.Fprintln(cmd.OutOrStdout())
				}
			}
			if r.Result != job.OK {
				return fmt.Errorf("job %s failed: %s", name, r.Exit)
			}
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}
