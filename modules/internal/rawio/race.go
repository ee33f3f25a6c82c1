//go:build race

package rawio

import (
	"runtime"
	"unsafe"
)

// ioSync orders, for the race detector, every write before the reads
// after it, as the syscall package's own ioSync does for its reads and
// writes: what a goroutine wrote before sending bytes is seen by the one
// that reads the answer.
var ioSync int64

// raceWrite tells the race detector that p is read by a write.
func raceWrite(p []byte) {
	if len(p) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(&p[0]), len(p))
	}
	runtime.RaceReleaseMerge(unsafe.Pointer(&ioSync))
}

// raceRead tells the race detector that p was filled by a read.
func raceRead(p []byte) {
	if len(p) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&p[0]), len(p))
	}
	runtime.RaceAcquire(unsafe.Pointer(&ioSync))
}

// raceEnabled reports a build with the race detector.
const raceEnabled = true
