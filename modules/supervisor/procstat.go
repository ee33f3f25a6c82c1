package supervisor

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcStat returns the fields of /proc/<pid>/stat from the third (the
// state) on, so that index i holds field i+3 of proc(5). The second field,
// the command name in parentheses, is left out: it may hold spaces and
// parentheses itself, so the fields are taken after its last ')'.
func ProcStat(pid int) ([]string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, fmt.Errorf("reading process %d: %w", pid, err)
	}
	return parseProcStat(pid, data)
}

// parseProcStat is ProcStat of the contents of /proc/<pid>/stat.
func parseProcStat(pid int, data []byte) ([]string, error) {
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return nil, fmt.Errorf("reading process %d: /proc/%d/stat is malformed", pid, pid)
	}
	fields := strings.Fields(string(data[end+1:]))
	if len(fields) < 2 {
		return nil, fmt.Errorf("reading process %d: /proc/%d/stat is malformed", pid, pid)
	}
	return fields, nil
}

// Alive reports whether process pid exists and has not ended (a zombie,
// not yet reaped, has).
func Alive(pid int) bool {
	fields, err := ProcStat(pid)
	return err == nil && fields[0] != "Z"
}
