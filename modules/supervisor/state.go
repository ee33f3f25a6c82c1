package supervisor

// State is where a supervised group of processes (a Python worker pool, a
// process upstream) is in its life. Its status shows it as text.
type State string

// The states, in order; a group never goes back.
const (
	Starting State = "starting" // its first processes are starting
	Running  State = "running"  // it serves
	Draining State = "draining" // no longer used by any config: it finishes what it has, then stops
	Stopped  State = "stopped"  // every process ended
	Failed   State = "failed"   // it could not start; the status says why
)

// Serving reports whether requests may still be given to the group:
// starting (they wait for it), running or draining (those already sent).
func (s State) Serving() bool { return s == Starting || s == Running || s == Draining }
