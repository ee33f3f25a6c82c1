package engine

import (
	"syscall"
	"time"
)

// Options describe a pool, resolved and validated: the Caddy adapter turns
// its config into them (defaults applied, paths absolute, env_file read),
// and the engine only reads them. Their JSON (with the adapter's own
// fields) is the pool's identity across config reloads.
type Options struct {
	// App is the app's callable, "module:callable".
	App string `json:"app"`
	// Name is the app's name, in logs, status and metrics.
	Name string `json:"name"`
	// Dir is the app's working directory, first on sys.path.
	Dir string `json:"dir"`
	// Python is the interpreter the runtime runs under.
	Python string `json:"python"`
	// Env is the app's environment as configured (KEY=value); Start adds
	// what its prepare step returns.
	Env []string `json:"env"`
	// Workers is the number of worker processes, or the minimum when
	// MaxWorkers is set; MaxWorkers > 0 turns on autoscaling.
	Workers    int `json:"workers"`
	MaxWorkers int `json:"max_workers"`
	// IdleTimeout retires an extra worker of an autoscaled pool.
	IdleTimeout time.Duration `json:"idle_timeout"`
	// MaxRequests (plus 0…MaxRequestsJitter) recycles a worker after that
	// many requests; 0: never.
	MaxRequests       int `json:"max_requests"`
	MaxRequestsJitter int `json:"max_requests_jitter"`
	// MaxMemory recycles a worker over this resident size; 0: no limit.
	MaxMemory int64 `json:"max_memory"`
	// MaxLifetime recycles a worker after this long (plus jitter); 0: never.
	MaxLifetime time.Duration `json:"max_lifetime"`
	// Watch restarts the workers when a file under Dir matching one of
	// these globs changes.
	Watch []string `json:"watch"`
	// Preload forks workers from a fork server that imported the app.
	Preload bool `json:"preload"`
	// Pipeline is "auto" or "off" (see dispatch.go).
	Pipeline string `json:"pipeline"`
	// CPUPolicy is the workers' scheduling policy: "batch" or "normal".
	CPUPolicy string `json:"cpu_policy"`
	// Threads is the number of channels per worker: threads (WSGI) or
	// concurrent requests (ASGI).
	Threads int `json:"threads"`
	// MaxQueue bounds the requests waiting for a worker; QueueTimeout
	// bounds how long each waits.
	MaxQueue     int           `json:"max_queue"`
	QueueTimeout time.Duration `json:"queue_timeout"`
	// MaxQueuePerClient bounds the requests of one client (clientOf)
	// waiting for a worker, so that one client cannot take every place
	// in the queue; 0: no bound of its own.
	MaxQueuePerClient int `json:"max_queue_per_client"`
	// StartTimeout bounds a worker's start; StopTimeout a stopping pool's
	// wait for its requests in flight.
	StartTimeout time.Duration `json:"start_timeout"`
	StopTimeout  time.Duration `json:"stop_timeout"`
	// Umask is the processes' file mode creation mask.
	Umask uint32 `json:"umask"`
	// Kind is "wsgi" (the default when empty) or "asgi".
	Kind string `json:"kind"`
	// Lifespan is the ASGI lifespan mode: auto, on or off.
	Lifespan string `json:"lifespan"`
	// MaxWebSockets bounds the WebSockets open at once across the pool's
	// workers (ASGI); one more gets 503. Each holds a channel for its
	// life, and channels are also what HTTP requests need: 0 means that
	// WebSockets and streamed responses together take at most half the
	// channels of the workers the pool runs (longLivedLimitLocked).
	MaxWebSockets int `json:"max_websockets"`
	// MaxStreams bounds the streamed responses (those that did not come
	// whole with their head: server-sent events, downloads) under way at
	// once across the pool's workers (ASGI); one more gets 503. 0: as
	// for MaxWebSockets.
	MaxStreams int `json:"max_streams"`
	// MaxOpenPerClient bounds the WebSockets and streamed responses one
	// client (clientOf) holds at once, of those its next one counts
	// against (ASGI; openPerClientLimit): past it, 429. 0 means a quarter
	// of that limit, at least MinOpenPerClient.
	MaxOpenPerClient int `json:"max_open_per_client"`
	// Credential runs the processes as another account (nil: Caddy's);
	// the adapter's user and group are its identity.
	Credential *syscall.Credential `json:"-"`
	// RuntimeDir is where the runtime is written for processes of
	// Caddy's own account (those of another account, and all of them when
	// it is empty, use a directory in the system's temporary directory).
	// Not part of the identity.
	RuntimeDir string `json:"-"`
}

// ASGI reports whether the pool serves an ASGI app.
func (o *Options) ASGI() bool { return o.Kind == "asgi" }

// KindName is "wsgi" or "asgi".
func (o *Options) KindName() string {
	if o.ASGI() {
		return "asgi"
	}
	return "wsgi"
}

// pipelining reports whether waiting requests may be pipelined to busy
// workers (see dispatch.go).
func (o *Options) pipelining() bool {
	return !o.ASGI() && o.Pipeline != "off"
}

// MaxChannels bounds a pool's channels at its most workers (workers,
// or max_workers, times Threads): each is a socket pair Caddy holds one
// end of, made when its worker starts. Each count may be at its own
// limit, not every one at once (1024 workers of 1024 threads would be a
// million socket pairs, past any file limit).
const MaxChannels = 65536
