//go:build !race

package rawio

// raceWrite and raceRead tell the race detector about raw reads and
// writes (race.go); without it they do nothing.
func raceWrite([]byte) {}

func raceRead([]byte) {}

// raceEnabled reports a build with the race detector.
const raceEnabled = false
